//go:build linux

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/pkg/errors"
)

// Packages the tests build.
const (
	guestPkg    = "github.com/fsd-launcher/fsd-launcher/e2e/guest"
	launcherPkg = "github.com/fsd-launcher/fsd-launcher/cmd/fsd-launcher"
)

// goTool returns the go command that runs these tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// goBuild builds pkg into out with CGO_ENABLED=0: a static binary, as
// released (fsd's sandbox refuses to confine a cgo binary). forGuest also
// pins linux/amd64 and strips the binary (it goes into the initramfs).
func goBuild(pkg, out string, forGuest bool) error {
	args := []string{"build", "-trimpath", "-o", out}
	if forGuest {
		args = append(args, "-ldflags=-s -w")
	}
	cmd := exec.Command(goTool(), append(args, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if forGuest {
		cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH=amd64")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return errors.Wrapf(err, "go build %s: %s", pkg, strings.TrimSpace(stderr.String()))
	}
	return nil
}
