package launcher

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// TestStatus proves what Status reports for live, stopped and mismatched
// daemons, and that it speaks 9P only to the built-in daemon.
func TestStatus(t *testing.T) {
	yes, no := true, false
	sleepPID, _ := startSleep(t)
	for _, tc := range []struct {
		name    string
		args    []string
		builtin bool
		// act runs after the start and returns the pid to ask about.
		act  func(t *testing.T, d *Daemon) int
		want StatusInfo // PID and Socket are filled in
	}{
		// A live external daemon: alive and listening; no 9P probe.
		{"external alive", nil, false, func(t *testing.T, d *Daemon) int { return d.PID() },
			StatusInfo{Alive: true, IdentityOK: true, SocketListening: true}},
		// The built-in daemon answers a Tversion.
		{"builtin answers", []string{"-fake.9p"}, true, func(t *testing.T, d *Daemon) int { return d.PID() },
			StatusInfo{Alive: true, IdentityOK: true, SocketListening: true, Answers: &yes}},
		// A built-in daemon that hangs up without answering.
		{"builtin silent", nil, true, func(t *testing.T, d *Daemon) int { return d.PID() },
			StatusInfo{Alive: true, IdentityOK: true, SocketListening: true, Answers: &no}},
		// Without a state file, identity comes from holding the socket.
		{"no state file", nil, false, func(t *testing.T, d *Daemon) int {
			if err := os.Remove(StatePath(d.SocketPath())); err != nil {
				t.Fatal(err)
			}
			return d.PID()
		}, StatusInfo{Alive: true, IdentityOK: true, SocketListening: true}},
		// A stopped daemon: nothing alive, nothing listening.
		{"stopped", nil, false, func(t *testing.T, d *Daemon) int {
			if err := d.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			return d.PID()
		}, StatusInfo{}},
		// An unrelated live PID with the daemon's socket: not the daemon,
		// though the socket listens.
		{"unrelated pid", nil, false, func(t *testing.T, d *Daemon) int { return sleepPID },
			StatusInfo{SocketListening: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeConfig(t, tc.args...)
			var opts []Option
			if tc.builtin {
				cfg.Daemon.Path = ""
				opts = append(opts, WithExecutable(fakeDaemon))
			}
			d := startFake(t, cfg, opts...)
			pid := tc.act(t, d)
			si, err := Status(context.Background(), pid, cfg.SocketPath)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.PID, want.Socket, want.Detail = pid, cfg.SocketPath, si.Detail
			if !equalStatus(*si, want) {
				t.Fatalf("Status:\n got %s\nwant %s", js(si), js(want))
			}
			if healthy := si.Alive && si.SocketListening && (si.Answers == nil || *si.Answers); healthy != (si.Detail == "") {
				t.Fatalf("detail %q does not match %s", si.Detail, js(si))
			}
		})
	}
	if _, err := Status(context.Background(), 0, "/tmp/x.sock"); !errors.Is(err, ErrInvalidPID) {
		t.Fatalf("Status(0) = %v", err)
	}
	if _, err := Status(context.Background(), 1, "relative.sock"); err == nil {
		t.Fatal("Status with a relative socket path succeeded")
	}
}

func equalStatus(a, b StatusInfo) bool {
	if (a.Answers == nil) != (b.Answers == nil) || (a.Answers != nil && *a.Answers != *b.Answers) {
		return false
	}
	a.Answers, b.Answers = nil, nil
	return a == b
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestStatusNeverConnectsToExternal proves Status does not connect to an
// external daemon's socket: this one, like virtiofsd, exits after its
// first connection, and is still running after Status.
func TestStatusNeverConnectsToExternal(t *testing.T) {
	cfg := fakeConfig(t, "-fake.one-conn=5")
	d := startFake(t, cfg)
	for i := 0; i < 3; i++ {
		si, err := Status(context.Background(), d.PID(), cfg.SocketPath)
		if err != nil || !si.Alive || !si.SocketListening {
			t.Fatalf("Status = %+v, %v", si, err)
		}
	}
	select {
	case <-d.Done():
		t.Fatalf("the daemon exited (%v): Status connected to it", d.Wait())
	default:
	}
	// The fake really does exit on a connection (the test can fail).
	c, err := net.Dial("unix", cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-d.Done():
	case <-time.After(generous):
		t.Fatal("the fake did not exit on its connection")
	}
}

const virtiofsd = "/usr/lib/qemu/virtiofsd"

// TestVirtiofsd runs QEMU's virtiofsd with -o sandbox=namespace as the
// external daemon. virtiofsd forks once the VMM connects: the PID the
// launcher reports and checks is the parent (the process it started); the
// child, in new PID and mount namespaces, serves the connection. Stopping
// the parent, through Stop or StopByPID, must leave no virtiofsd behind.
func TestVirtiofsd(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(virtiofsd); err != nil {
		t.Skipf("%s not installed", virtiofsd)
	}
	for _, byPID := range []bool{false, true} {
		name := "Stop"
		if byPID {
			name = "StopByPID"
		}
		t.Run(name, func(t *testing.T) {
			cfg := config.Default(t.TempDir(), filepath.Join(shortTempDir(t), "vfs.sock"))
			cfg.Daemon.Path = virtiofsd
			cfg.Daemon.Args = []string{"--fd={fd}", "-o", "source={shared_dir}", "-o", "sandbox=namespace", "-o", "cache=none"}
			cfg.Daemon.ReadyLine = "Waiting for vhost-user socket connection"
			cfg.ReadyTimeout = config.Duration(generous)
			cfg.StopTimeout = config.Duration(generous)
			var (
				pid int
				d   *Daemon
			)
			if byPID {
				pid, _ = runHelper(t, "detached", cfg)
			} else {
				d = startFake(t, cfg)
				pid = d.PID()
			}
			start := startTime(t, pid)
			si, err := Status(context.Background(), pid, cfg.SocketPath)
			if err != nil || !si.Alive || !si.SocketListening || si.Answers != nil {
				t.Fatalf("Status = %s, %v", js(si), err)
			}
			// Connect as the VMM would: virtiofsd forks its sandboxed child.
			c, err := net.Dial("unix", cfg.SocketPath)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			child, childStart := waitForChild(t, pid)
			if exe, _ := os.Readlink("/proc/" + strconv.Itoa(child) + "/exe"); !strings.HasSuffix(exe, "virtiofsd") {
				t.Fatalf("child %d is %q", child, exe)
			}
			if byPID {
				err = StopByPID(context.Background(), pid, cfg.SocketPath)
			} else {
				err = d.Stop(context.Background())
			}
			if err != nil {
				t.Fatal(err)
			}
			assertReaped(t, pid, start)
			waitGone(t, child, childStart)
			assertReaped(t, child, childStart)
			if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
				t.Fatal("socket or state file left behind")
			}
		})
	}
}

// waitForChild waits (generously) for pid to have a child and returns it.
func waitForChild(t *testing.T, pid int) (int, uint64) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for time.Now().Before(deadline) {
		desc, err := descendantsOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		for c, st := range desc {
			return c, st.StartTime
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d never forked", pid)
	return 0, 0
}
