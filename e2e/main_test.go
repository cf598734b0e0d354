//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// buildDir holds the binaries the tests build once per run.
var buildDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "fsd-e2e-build-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	buildDir = d
	handleInterrupts()
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// required reports whether missing tools must fail the tests (CI) rather
// than skip them.
func required() bool { return os.Getenv("FSD_E2E_REQUIRED") != "" }

// skipOrFail skips the test, or fails it when FSD_E2E_REQUIRED is set.
func skipOrFail(t *testing.T, format string, args ...interface{}) {
	t.Helper()
	if required() {
		t.Fatalf("FSD_E2E_REQUIRED is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

// guestEnv is what booting a guest needs on the host.
type guestEnv struct {
	qemu    string
	kern    kernel
	busybox string
	init    string // the guest helper, built for the guest
}

var (
	guestOnce sync.Once
	guestHost guestEnv
	guestErr  error
)

// needGuest finds QEMU, the kernel and busybox and builds the guest
// helper, or skips the test (fails it under FSD_E2E_REQUIRED).
func needGuest(t *testing.T) *guestEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU guest: skipped in -short mode")
	}
	var err error
	if guestHost.qemu, err = findQEMU(); err != nil {
		skipOrFail(t, "%v (e2e/install-deps.sh installs it)", err)
	}
	if guestHost.kern, err = findKernel(); err != nil {
		skipOrFail(t, "%v (e2e/install-deps.sh installs linux-image-amd64)", err)
	}
	if guestHost.busybox, err = findBusybox(); err != nil {
		skipOrFail(t, "%v (e2e/install-deps.sh installs it)", err)
	}
	guestOnce.Do(func() {
		guestHost.init = filepath.Join(buildDir, "e2e-guest")
		guestErr = goBuild(guestPkg, guestHost.init, true)
	})
	if guestErr != nil {
		t.Fatalf("build the guest helper: %v", guestErr)
	}
	return &guestHost
}

// bootSpec is one guest run.
type bootSpec struct {
	Script   []byte
	Modules  []string // wanted modules; dependencies are added
	Shares   []guestcfg.Share
	Env      map[string]string
	QEMUArgs []string
	MemoryMB int
	Timeout  time.Duration
	OnLine   func(string) // sees each console line as it arrives
}

// boot builds the initramfs in dir, runs the guest and parses its results.
// The returned error is about the harness; run.Err says how QEMU ended.
func (g *guestEnv) boot(t *testing.T, dir string, spec bootSpec) (*vmRun, *guestResults, error) {
	return g.bootContext(context.Background(), t, dir, spec)
}

// bootContext is boot with a context that ends the run early (QEMU
// killed, the context's cause in vmRun.Err).
func (g *guestEnv) bootContext(ctx context.Context, t *testing.T, dir string, spec bootSpec) (*vmRun, *guestResults, error) {
	t.Helper()
	mods, err := g.kern.resolveModules(spec.Modules)
	if err != nil {
		return nil, nil, err
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	ir := initramfs{
		Busybox: g.busybox,
		Init:    g.init,
		Script:  spec.Script,
		Modules: mods,
		Config: guestcfg.Config{
			Shares:   spec.Shares,
			Env:      spec.Env,
			Results:  "/dev/ttyS1",
			PortWait: 60,
		},
	}
	if err := ir.write(initrd); err != nil {
		return nil, nil, err
	}
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = guestTimeout()
	}
	// Stay inside go test's own -timeout, which kills the binary without
	// running cleanups: leave a minute for stopping the daemon.
	if deadline, ok := t.Deadline(); ok {
		if left := time.Until(deadline) - time.Minute; left < timeout {
			timeout = left
		}
		if timeout <= 0 {
			return nil, nil, errors.New("no time left before go test's -timeout")
		}
	}
	v := vm{
		QEMU:     g.qemu,
		Kernel:   g.kern.Image,
		Initrd:   initrd,
		MemoryMB: spec.MemoryMB,
		Args:     spec.QEMUArgs,
		Dir:      dir,
		Timeout:  timeout,
		OnLine:   spec.OnLine,
	}
	run, err := v.run(ctx)
	if err != nil {
		return nil, nil, err
	}
	res, err := parseResults(run.Results)
	return run, res, err
}

// guestTimeout is the hard limit for one guest run ($E2E_TIMEOUT, default
// 6 minutes: a normal run takes a fraction of that).
func guestTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("E2E_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return 6 * time.Minute
}

// Emergency stops: an interrupted test binary (Ctrl-C, SIGTERM from CI)
// runs no cleanups, and a daemon the launcher detached is not its child,
// so Pdeathsig cannot take it down. Whatever starts such a daemon
// registers its stop here until its cleanup has run.
var (
	emergencyMu    sync.Mutex
	emergencyNext  int
	emergencyStops = map[int]func(){}
)

// onInterrupt registers stop to run if the test binary is interrupted; the
// returned function unregisters it.
func onInterrupt(stop func()) (unregister func()) {
	emergencyMu.Lock()
	defer emergencyMu.Unlock()
	id := emergencyNext
	emergencyNext++
	emergencyStops[id] = stop
	return func() {
		emergencyMu.Lock()
		defer emergencyMu.Unlock()
		delete(emergencyStops, id)
	}
}

// handleInterrupts runs the registered stops on SIGINT or SIGTERM, then
// exits.
func handleInterrupts() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping daemons\n", sig)
		emergencyMu.Lock()
		for _, stop := range emergencyStops {
			stop()
		}
		emergencyMu.Unlock()
		os.RemoveAll(buildDir)
		os.Exit(2)
	}()
}
