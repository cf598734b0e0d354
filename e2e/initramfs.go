//go:build linux

package e2e

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// errNoBusybox means no static busybox is installed.
var errNoBusybox = errors.New("no static busybox found (Debian package busybox-static)")

// findBusybox returns a statically linked busybox: the guest has no
// dynamic loader.
func findBusybox() (string, error) {
	candidates := []string{"/bin/busybox", "/usr/bin/busybox"}
	if p, err := exec.LookPath("busybox"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if static, err := isStatic(p); err == nil && static {
			return p, nil
		}
	}
	return "", errNoBusybox
}

// isStatic reports whether an ELF executable needs no program interpreter.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, errors.Wrapf(err, "read ELF %s", path)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// initramfs describes the guest's root file system.
type initramfs struct {
	Busybox string          // host path of a static busybox
	Init    string          // host path of the guest helper (becomes /init)
	Script  []byte          // the workload, installed as /workload.sh
	Modules []module        // loaded in this order
	Config  guestcfg.Config // Modules and Script are filled in here
}

// write builds the archive at path.
func (s initramfs) write(path string) (err error) {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return errors.Wrapf(err, "create initramfs %s", path)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = errors.Wrapf(cerr, "close initramfs %s", path)
		}
	}()
	bw := bufio.NewWriterSize(out, 1<<20)
	c := newCPIOWriter(bw)
	for _, d := range []string{"bin", "sbin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "run", "sys", "tmp"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)

	for _, f := range []struct{ src, dst string }{{s.Init, "init"}, {s.Busybox, "bin/busybox"}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return errors.Wrapf(err, "read %s for the initramfs", f.src)
		}
		c.File(f.dst, 0o755, data)
	}
	c.Symlink("bin/sh", "busybox")
	c.File("workload.sh", 0o755, s.Script)

	cfg := s.Config
	cfg.Script = "/workload.sh"
	cfg.Modules = nil
	for _, m := range s.Modules {
		data, err := readModule(m.Path)
		if err != nil {
			return err
		}
		dst := "lib/modules/" + m.Name + ".ko"
		c.File(dst, 0o644, data)
		cfg.Modules = append(cfg.Modules, "/"+dst)
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode guest config")
	}
	c.File(guestcfg.Path[1:], 0o644, js)
	if err := c.Close(); err != nil {
		return err
	}
	return errors.Wrapf(bw.Flush(), "write initramfs %s", path)
}
