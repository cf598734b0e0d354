//go:build linux

package e2e

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

//go:embed workload.sh
var workloadScript []byte

// guestMemoryMB is the guest's RAM (also the size of virtio-fs's shared
// memfd): room for the 64 MiB files the workload keeps in tmpfs.
const guestMemoryMB = 512

// virtiofsTag is the virtio-fs tag the guest mounts.
const virtiofsTag = "e2e"

// TestGuest9P boots a guest that mounts the root export and the read-only
// export over 9P2000.L (virtio-serial ports wired to the daemon's socket,
// one connection per mount) and runs the workload.
func TestGuest9P(t *testing.T) {
	runWorkload(t, guestcfg.Transport9P)
}

// TestGuestVirtioFS boots a guest that mounts the share over virtio-fs
// (virtiofsd started by the launcher) and runs the same workload.
func TestGuestVirtioFS(t *testing.T) {
	runWorkload(t, guestcfg.TransportVirtioFS)
}

// needRoot skips (or fails, under FSD_E2E_REQUIRED) when not root: chown
// in the guest needs a root server, and virtiofsd's sandbox needs root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (the servers must chown and virtiofsd must sandbox)")
	}
}

var (
	launcherOnce sync.Once
	launcherBin  string
	launcherErr  error
)

// chooseDaemon is the one place that decides which daemons serve the
// guest: fsd-launcher (fsd for 9P, virtiofsd for virtio-fs), built from
// this tree, or with E2E_DAEMON=standin diod and a directly started
// virtiofsd.
func chooseDaemon(t *testing.T, transport string) daemonStarter {
	t.Helper()
	switch mode := os.Getenv("E2E_DAEMON"); mode {
	case "standin":
		return standinStarter{}
	case "", "launcher":
		launcherOnce.Do(func() {
			launcherBin = filepath.Join(buildDir, "fsd-launcher")
			launcherErr = goBuild(launcherPkg, launcherBin, false)
		})
		if launcherErr != nil {
			t.Fatalf("build fsd-launcher (E2E_DAEMON=standin runs the stand-ins instead): %v", launcherErr)
		}
		tmpl, err := filepath.Abs(filepath.Join("..", "testdata", "virtiofsd.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return launcherStarter{Bin: launcherBin, VirtiofsdTemplate: tmpl}
	default:
		t.Fatalf("E2E_DAEMON=%q: want launcher (default) or standin", mode)
	}
	return nil
}

// runWorkload is one whole run: fixture, daemon, guest, checks, stop,
// nothing left behind.
func runWorkload(t *testing.T, transport string) {
	started := time.Now()
	g := needGuest(t)
	needRoot(t)
	if transport == guestcfg.TransportVirtioFS {
		if _, err := os.Stat(virtiofsdPath); err != nil {
			skipOrFail(t, "virtiofsd: %v (Debian package qemu-system-common)", err)
		}
	}
	starter := chooseDaemon(t, transport)

	dir := t.TempDir()
	sock := filepath.Join(dir, "fs.sock")
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { checkNothingLeft(t, dir, sock) })

	fx, err := newFixture(dir, fullShape)
	if err != nil {
		t.Fatal(err)
	}
	haveRO := transport == guestcfg.Transport9P
	spec := daemonSpec{Transport: transport, Dir: dir, SocketPath: sock, SharedDir: fx.Root}
	if haveRO {
		spec.Exports = []export{{Tag: roTag, Source: fx.RO, ReadOnly: true}}
	}
	ctx := context.Background()
	h, err := starter.Start(ctx, spec)
	if errors.Is(err, errNoDaemon) {
		skipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("start %s daemon: %v", starter.Name(), err)
	}
	t.Logf("%s: pid %d on %s; log so far:\n%s", h.Name(), h.PID(), h.SocketPath(), h.Log())
	stopped := false
	unregister := onInterrupt(func() { _ = h.Stop(context.Background()) })
	t.Cleanup(func() {
		defer unregister()
		if !stopped {
			if err := h.Stop(context.Background()); err != nil {
				t.Errorf("stop the daemon: %v", err)
			}
		}
	})

	boot := bootSpec{
		Script:   workloadScript,
		Env:      fx.guestEnv(transport, haveRO),
		MemoryMB: guestMemoryMB,
	}
	switch transport {
	case guestcfg.Transport9P:
		boot.Modules = []string{"virtio_pci", "virtio_console", "9pnet_fd", "9p"}
		opts := fmt.Sprintf("trans=fd,version=9p2000.L,msize=%d,cache=%s", msize(), ninepCache())
		withAname := func(tag string) string {
			if a := h.Aname(tag); a != "" {
				return opts + ",aname=" + a
			}
			return opts
		}
		boot.Shares = []guestcfg.Share{
			{Name: "root", Transport: transport, Port: "fs0", Source: "e2e-root", Options: withAname(""), Target: guestRoot},
			{Name: "ro", Transport: transport, Port: "fs1", Source: "e2e-ro", Options: withAname(roTag), Target: guestRO},
		}
		// Two ports on the same socket: two chardevs, two connections, one
		// per mount.
		boot.QEMUArgs = []string{
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=fs0,path=" + sock,
			"-device", "virtserialport,bus=vser0.0,chardev=fs0,name=fs0",
			"-chardev", "socket,id=fs1,path=" + sock,
			"-device", "virtserialport,bus=vser0.0,chardev=fs1,name=fs1",
		}
	case guestcfg.TransportVirtioFS:
		boot.Modules = []string{"virtio_pci", "virtiofs"}
		// The workload mounts it itself: mount -t virtiofs TAG /mnt/root.
		boot.Env["E2E_VIRTIOFS_TAG"] = virtiofsTag
		boot.QEMUArgs = []string{
			"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", guestMemoryMB),
			"-numa", "node,memdev=mem",
			"-chardev", "socket,id=vfs,path=" + sock,
			"-device", "vhost-user-fs-pci,chardev=vfs,tag=" + virtiofsTag,
		}
	}

	// A daemon that dies ends the run at once instead of at the timeout.
	runCtx, cancelRun := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchDaemon(runCtx, h, cancelRun)
	}()
	run, res, err := g.bootContext(runCtx, t, dir, boot)
	cancelRun(nil)
	<-watched
	if err != nil {
		t.Fatalf("guest run: %v", err)
	}
	showConsole := func() {
		t.Logf("guest console:\n%s", run.Console)
		t.Logf("results port:\n%s", run.Results)
		t.Logf("daemon log:\n%s", h.Log())
	}
	if run.Err != nil {
		showConsole()
		t.Fatalf("guest: %v", run.Err)
	}

	// Stop the daemon the way a runtime would, and prove it went.
	stopped = true
	if err := h.Stop(ctx); err != nil {
		showConsole()
		t.Fatalf("stop: %v", err)
	}
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("still running right after stop returned: %v", left)
	}

	problems := checkSteps(res, map[string]bool{"ro_export": !haveRO})
	if transport == guestcfg.Transport9P {
		// The daemon must grant the msize asked for, up to its own cap.
		want := msize()
		if c := h.MsizeCap(); c > 0 && c < want {
			want = c
		}
		if got := negotiatedMsize(res); got < want {
			problems = append(problems, fmt.Sprintf("negotiated msize %d, want at least %d", got, want))
		}
	}
	problems = append(problems, fx.verify(res, haveRO)...)
	if len(problems) > 0 {
		showConsole()
		t.Errorf("%d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	reportTimings(t, transport, h.Name(), res, run.Wall, time.Since(started))
}

// checkNothingLeft fails the test if a process of the run (QEMU, the
// daemon, a forked daemon child), a child of the test binary, the socket
// or the launcher's state file is left, and cleans up what it finds.
func checkNothingLeft(t *testing.T, dir, sock string) {
	t.Helper()
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
		killAll(left)
		if still := waitGone(dir, 10*time.Second); len(still) > 0 {
			t.Errorf("could not kill: %v", still)
		}
	}
	if kids := childrenOf(os.Getpid()); len(kids) > 0 {
		t.Errorf("child processes of the test left behind: %v", kids)
	}
	for _, p := range []string{sock, sock + ".state"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
			os.Remove(p)
		}
	}
}

// negotiatedMsize reads msize= from the guest's /proc/mounts line for the
// root export (the mount_root step's detail); 0 when absent.
func negotiatedMsize(res *guestResults) int {
	s, ok := res.step("mount_root")
	if !ok {
		return 0
	}
	for _, opt := range strings.FieldsFunc(s.Detail, func(r rune) bool { return r == ',' || r == ' ' }) {
		if v, ok := strings.CutPrefix(opt, "msize="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// msize is the 9P msize the guest asks for ($E2E_MSIZE, default 512 KiB).
func msize() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("E2E_MSIZE"), &n); err == nil && n >= 8192 {
		return n
	}
	return 512 << 10
}

// ninepCache is the 9P cache mode ($E2E_9P_CACHE, default none).
func ninepCache() string {
	if c := os.Getenv("E2E_9P_CACHE"); c != "" {
		return c
	}
	return "none"
}

// timingRecord is one run's timings, as written to $E2E_TIMINGS.
type timingRecord struct {
	Transport  string       `json:"transport"`
	Daemon     string       `json:"daemon"`
	Setup      string       `json:"setup"`
	Msize      int          `json:"msize,omitempty"` // asked for
	Cache      string       `json:"cache,omitempty"`
	Mount      string       `json:"mount"` // the guest's /proc/mounts line: what was negotiated
	Steps      []stepTiming `json:"steps"`
	WorkloadMS float64      `json:"workload_ms"` // guest-side, whole script
	BootMS     float64      `json:"boot_ms"`     // guest uptime when the script started
	QEMUWallMS float64      `json:"qemu_wall_ms"`
	TestWallMS float64      `json:"test_wall_ms"`
	When       string       `json:"when"`
}

type stepTiming struct {
	Name   string  `json:"name"`
	Status string  `json:"status"`
	MS     float64 `json:"ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// reportTimings logs the guest-side step timings and appends them to
// $E2E_TIMINGS (JSON lines) when set.
func reportTimings(t *testing.T, transport, daemon string, res *guestResults, qemuWall, testWall time.Duration) {
	t.Helper()
	rec := timingRecord{
		Transport: transport,
		Daemon:    daemon,
		Setup: fmt.Sprintf("whole stack in an emulated guest (QEMU TCG, %d MiB, 1 vCPU, Linux %s), transport included",
			guestMemoryMB, guestHost.kern.Version),
		WorkloadMS: ms(res.Workload),
		BootMS:     ms(res.Boot),
		QEMUWallMS: ms(qemuWall),
		TestWallMS: ms(testWall),
		When:       time.Now().UTC().Format(time.RFC3339),
	}
	if transport == guestcfg.Transport9P {
		rec.Msize, rec.Cache = msize(), ninepCache()
	}
	if s, ok := res.step("mount_root"); ok {
		rec.Mount = s.Detail
	}
	var b strings.Builder
	fmt.Fprintf(&b, "guest-side timings (%s via %s):\n", transport, daemon)
	for _, s := range res.Steps {
		rec.Steps = append(rec.Steps, stepTiming{Name: s.Name, Status: s.Status, MS: ms(s.Elapsed)})
		fmt.Fprintf(&b, "  %-16s %-4s %10.1f ms\n", s.Name, s.Status, ms(s.Elapsed))
	}
	fmt.Fprintf(&b, "  %-16s %-4s %10.1f ms (boot %.0f ms, QEMU wall %.1f s, test wall %.1f s)",
		"workload", "", rec.WorkloadMS, rec.BootMS, qemuWall.Seconds(), testWall.Seconds())
	t.Log(b.String())
	path := os.Getenv("E2E_TIMINGS")
	if path == "" {
		return
	}
	line, err := json.Marshal(rec)
	if err != nil {
		t.Errorf("encode timings: %v", err)
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Errorf("E2E_TIMINGS: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Errorf("E2E_TIMINGS: write %s: %v", path, err)
	}
}
