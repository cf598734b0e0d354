//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// TestHarnessDetectsFailures boots guests that go wrong in each way the
// harness must notice: a failed step, a kernel panic, a hang. It proves the
// e2e tests cannot pass by accident, and that a hung QEMU is killed.
func TestHarnessDetectsFailures(t *testing.T) {
	g := needGuest(t)
	for _, tc := range []struct {
		name    string
		script  string
		timeout time.Duration
		check   func(t *testing.T, run *vmRun, res *guestResults)
	}{
		{
			// A step that fails is reported as FAIL with its detail, and
			// the run ends with E2E FAILED.
			name:   "failed step",
			script: "echo BEGIN good\necho STEP good OK\necho BEGIN bad\necho STEP bad FAIL it broke\n",
			check: func(t *testing.T, run *vmRun, res *guestResults) {
				if run.Err != nil {
					t.Fatalf("run: %v", run.Err)
				}
				if res.Done || len(res.Steps) != 2 || res.Steps[1].Status != guestcfg.StatusFail ||
					res.Steps[1].Detail != "it broke" {
					t.Errorf("results: %+v", res)
				}
			},
		},
		{
			// A script that dies mid-step leaves a step that never ended:
			// E2E FAILED, and the guest still powers off.
			name:   "script dies mid-step",
			script: "echo BEGIN doomed\nexit 3\n",
			check: func(t *testing.T, run *vmRun, res *guestResults) {
				if run.Err != nil {
					t.Fatalf("run: %v", run.Err)
				}
				if res.Done || !strings.Contains(res.Final, `step "doomed" never ended`) ||
					!strings.Contains(res.Final, "exit status 3") {
					t.Errorf("final line: %q", res.Final)
				}
			},
		},
		{
			// A kernel panic is detected on the console.
			name:   "kernel panic",
			script: "echo BEGIN crash\necho c >/proc/sysrq-trigger\n",
			check: func(t *testing.T, run *vmRun, res *guestResults) {
				if !errors.Is(run.Err, errGuestPanic) {
					t.Errorf("run error %v, want a panic", run.Err)
				}
				if !strings.Contains(run.Console, panicMarker) {
					t.Errorf("console lacks the panic:\n%s", run.Console)
				}
			},
		},
		{
			// A guest that never finishes is killed at the timeout.
			name:    "hang",
			script:  "echo BEGIN forever\nwhile :; do sleep 1; done\n",
			timeout: 15 * time.Second, // booting or hanging: either way not finished
			check: func(t *testing.T, run *vmRun, res *guestResults) {
				if !errors.Is(run.Err, errGuestTimeout) {
					t.Errorf("run error %v, want a timeout", run.Err)
				}
				if res.Final != "" {
					t.Errorf("final line %q from a guest that was killed", res.Final)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Cleanup(func() { checkNothingLeft(t, dir, filepath.Join(dir, "none.sock")) })
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 3 * time.Minute
			}
			run, res, err := g.boot(t, dir, bootSpec{Script: []byte(tc.script), Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, run, res)
			if t.Failed() {
				t.Logf("console:\n%s", run.Console)
			}
		})
	}
}

// TestVirtiofsdStopWhileConnected checks issue 9's fork question end to
// end: once a VMM has connected, virtiofsd (sandbox=namespace) forks; the
// PID the launcher reports must be one whose stop takes the whole server
// down, and stop by PID and socket path must leave no virtiofsd and no
// socket behind.
func TestVirtiofsdStopWhileConnected(t *testing.T) {
	g := needGuest(t)
	needRoot(t)
	if _, err := os.Stat(virtiofsdPath); err != nil {
		skipOrFail(t, "virtiofsd: %v (Debian package qemu-system-common)", err)
	}
	starter := chooseDaemon(t, guestcfg.TransportVirtioFS)
	dir := t.TempDir()
	sock := filepath.Join(dir, "fs.sock")
	t.Cleanup(func() { checkNothingLeft(t, dir, sock) })
	shared := filepath.Join(dir, "root")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := starter.Start(ctx, daemonSpec{Transport: guestcfg.TransportVirtioFS, Dir: dir, SocketPath: sock, SharedDir: shared})
	if errors.Is(err, errNoDaemon) {
		skipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	stopped := false
	unregister := onInterrupt(func() { _ = h.Stop(context.Background()) })
	t.Cleanup(func() {
		defer unregister()
		if !stopped {
			_ = h.Stop(context.Background())
		}
	})

	const mem = 128
	q, err := startPaused(g.qemu, mem, []string{
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", mem),
		"-numa", "node,memdev=mem",
		"-chardev", "socket,id=vfs,path=" + sock,
		"-device", "vhost-user-fs-pci,chardev=vfs,tag=" + virtiofsTag,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Stop() })

	// virtiofsd sets up its sandbox (and forks) once QEMU has connected.
	var forked []proc
	deadline := time.Now().Add(60 * time.Second)
	for len(forked) == 0 && time.Now().Before(deadline) {
		select {
		case <-q.Exited():
			t.Fatalf("QEMU exited: %s\ndaemon log:\n%s", q.Stop(), h.Log())
		case <-time.After(20 * time.Millisecond):
		}
		forked = descendants(h.PID())
	}
	if len(forked) == 0 {
		t.Fatalf("virtiofsd (pid %d) never forked its sandbox child; daemon log:\n%s", h.PID(), h.Log())
	}
	parent, _ := readProc(h.PID())
	t.Logf("reported pid %d (%s); forked: %v", h.PID(), parent.Cmdline, forked)

	stopped = true
	if err := h.Stop(ctx); err != nil {
		t.Fatalf("stop: %v\ndaemon log:\n%s", err, h.Log())
	}
	// Right when stop returns: no virtiofsd of this run, parent or child.
	if left := virtiofsdOf(dir); len(left) > 0 {
		t.Errorf("virtiofsd processes alive right after stop returned: %v", left)
		deadline := time.Now().Add(5 * time.Second)
		for len(virtiofsdOf(dir)) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if still := virtiofsdOf(dir); len(still) > 0 {
			t.Errorf("and still alive 5 s later: %v", still)
		}
	}
	for _, p := range forked {
		if processAlive(p) {
			t.Errorf("forked child %d alive after stop", p.PID)
		}
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("socket %s left after stop", sock)
	}
}

// virtiofsdOf lists the live virtiofsd processes serving a directory under
// dir (QEMU mentions dir too, through its socket path).
func virtiofsdOf(dir string) []proc {
	var out []proc
	for _, p := range processesMentioning(dir) {
		if strings.Contains(p.Cmdline, "virtiofsd") && p.State != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// TestDaemonDiesMidRun kills the 9P daemon while the guest uses the share:
// the run must end early with errDaemonDied (not at the timeout), and stop
// by PID and socket path must still clean up the dead daemon's socket.
func TestDaemonDiesMidRun(t *testing.T) {
	g := needGuest(t)
	needRoot(t)
	starter := chooseDaemon(t, guestcfg.Transport9P)
	dir := t.TempDir()
	sock := filepath.Join(dir, "fs.sock")
	t.Cleanup(func() { checkNothingLeft(t, dir, sock) })
	shared := filepath.Join(dir, "root")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := starter.Start(ctx, daemonSpec{Transport: guestcfg.Transport9P, Dir: dir, SocketPath: sock, SharedDir: shared})
	if errors.Is(err, errNoDaemon) {
		skipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	unregister := onInterrupt(func() { _ = h.Stop(context.Background()) })
	defer unregister()
	victim, ok := readProc(h.PID())
	if !ok {
		t.Fatalf("daemon pid %d gone right after start", h.PID())
	}

	opts := fmt.Sprintf("trans=fd,version=9p2000.L,msize=%d", msize())
	if a := h.Aname(""); a != "" {
		opts += ",aname=" + a
	}
	script := "echo BEGIN mounted\n/init mount root && echo STEP mounted OK\n" +
		"while :; do ls /mnt/root >/dev/null 2>&1; sleep 1; done\n"
	killed := make(chan struct{})
	var once sync.Once
	runCtx, cancelRun := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchDaemon(runCtx, h, cancelRun)
	}()
	run, _, err := g.bootContext(runCtx, t, dir, bootSpec{
		Script:  []byte(script),
		Modules: []string{"virtio_pci", "virtio_console", "9pnet_fd", "9p"},
		Shares: []guestcfg.Share{
			{Name: "root", Transport: guestcfg.Transport9P, Port: "fs0", Source: "e2e-root", Options: opts, Target: guestRoot},
		},
		QEMUArgs: []string{
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=fs0,path=" + sock,
			"-device", "virtserialport,bus=vser0.0,chardev=fs0,name=fs0",
		},
		OnLine: func(line string) {
			if strings.Contains(line, "STEP mounted OK") {
				once.Do(func() {
					if processAlive(victim) {
						_ = syscall.Kill(victim.PID, syscall.SIGKILL)
					}
					close(killed)
				})
			}
		},
	})
	cancelRun(nil)
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-killed:
	default:
		t.Fatalf("the guest never mounted the share (run: %v)\nconsole:\n%s", run.Err, run.Console)
	}
	if !errors.Is(run.Err, errDaemonDied) {
		t.Errorf("run ended with %v, want errDaemonDied\nconsole:\n%s", run.Err, run.Console)
	}
	// The daemon is gone; stop must still clean up its socket (and the
	// launcher's state file).
	if err := h.Stop(ctx); err != nil {
		t.Errorf("stop after the daemon died: %v", err)
	}
}
