package launcher

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go/mocktracer"
	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/socket"
)

// TestStopByPID proves a later process that knows only PID and socket stops
// a daemon it did not start (not its registered child: the daemon was
// started by a helper process that exited), reaps it when it became its
// child, removes socket and state file, and that a second stop is a no-op.
func TestStopByPID(t *testing.T) {
	tr := mocktracer.New()
	cfg := fakeConfig(t)
	pid, _ := runHelper(t, "detached", cfg)
	start := startTime(t, pid)
	if registered(pid) != nil {
		t.Fatal("the helper's daemon is registered in this process")
	}
	if err := StopByPID(context.Background(), pid, cfg.SocketPath, WithStopTracer(tr)); err != nil {
		t.Fatalf("StopByPID: %v", err)
	}
	assertReaped(t, pid, start)
	if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
		t.Fatal("socket or state file left behind")
	}
	if err := StopByPID(context.Background(), pid, cfg.SocketPath); err != nil {
		t.Fatalf("second StopByPID: %v", err)
	}
	spans := tr.FinishedSpans()
	if len(spans) != 1 || spans[0].OperationName != "launcher.stop" || spans[0].Tag("subsystem") != "launcher" ||
		spans[0].Tag("pid") != pid || spans[0].Tag("socket") != cfg.SocketPath {
		t.Fatalf("spans = %v", spans)
	}
}

// TestStopByPIDOwnDaemon proves StopByPID on a daemon this very process
// started goes through its Daemon (whose goroutine reaps it), so Wait still
// reports how it ended.
func TestStopByPIDOwnDaemon(t *testing.T) {
	cfg := fakeConfig(t, "-fake.term-code=7")
	d := startFake(t, cfg)
	if err := StopByPID(context.Background(), d.PID(), cfg.SocketPath); err != nil {
		t.Fatal(err)
	}
	var ee *ExitError
	if err := d.Wait(); !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("Wait() = %v, want status 7", err)
	}
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

// TestStopByPIDKillsAfterTimeout proves SIGKILL follows SIGTERM once the
// stop timeout passed, through the pidfd, with a launcher.kill span.
func TestStopByPIDKillsAfterTimeout(t *testing.T) {
	tr := mocktracer.New()
	cfg := fakeConfig(t, "-fake.ignore-term")
	pid, _ := runHelper(t, "detached", cfg)
	start := startTime(t, pid)
	err := StopByPID(context.Background(), pid, cfg.SocketPath, WithStopTimeout(200*time.Millisecond), WithStopTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	assertReaped(t, pid, start)
	names := map[string]bool{}
	for _, s := range tr.FinishedSpans() {
		names[s.OperationName] = true
		if s.OperationName == "launcher.kill" && (s.Tag("pid") != pid || s.Tag("subsystem") != "launcher") {
			t.Fatalf("kill span tags %v", s.Tags())
		}
	}
	if !names["launcher.stop"] || !names["launcher.kill"] {
		t.Fatalf("spans %v", names)
	}
}

// TestStopByPIDForkedChild proves StopByPID stops the daemon's forked
// child that holds the socket: while the parent lives (found as its
// descendant), and after the parent crashed (found as a holder of the
// socket the state file records).
func TestStopByPIDForkedChild(t *testing.T) {
	for _, crashFirst := range []bool{false, true} {
		t.Run("parent crashed first="+strconv.FormatBool(crashFirst), func(t *testing.T) {
			childFile := filepath.Join(t.TempDir(), "child")
			cfg := fakeConfig(t, "-fake.fork-child="+childFile)
			pid, _ := runHelper(t, "detached", cfg)
			start := startTime(t, pid)
			child := readPIDFile(t, childFile)
			childStart := startTime(t, child)
			if crashFirst {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitGone(t, pid, start)
				if !running(child, childStart) {
					t.Fatal("the child died with its parent; nothing to prove")
				}
			}
			if err := StopByPID(context.Background(), pid, cfg.SocketPath); err != nil {
				t.Fatal(err)
			}
			assertReaped(t, pid, start)
			assertReaped(t, child, childStart)
			if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
				t.Fatal("socket or state file left behind")
			}
		})
	}
}

// crashedDaemon starts a daemon from a helper process and SIGKILLs it,
// leaving its socket file and state file behind as a crash would. It
// returns the configuration and the dead daemon's PID.
func crashedDaemon(t *testing.T) (*config.Config, int) {
	t.Helper()
	cfg := fakeConfig(t)
	pid, _ := runHelper(t, "detached", cfg)
	start := startTime(t, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, start)
	if !exists(t, cfg.SocketPath) || !exists(t, StatePath(cfg.SocketPath)) {
		t.Fatal("the crash left no socket or state file")
	}
	return cfg, pid
}

// TestStopByPIDRefusals proves a PID that is not provably the daemon is
// never signalled: the unrelated process survives and nothing is removed.
func TestStopByPIDRefusals(t *testing.T) {
	sleepPID, sleepStart := startSleep(t)
	for _, tc := range []struct {
		name string
		// setup returns the socket path to stop and the pid to pass.
		setup func(t *testing.T) (string, int)
		want  error
	}{
		// The socket and state file of a crashed daemon, and the PID of an
		// unrelated live process: the state file names another PID.
		{"unrelated pid, crashed daemon's state", func(t *testing.T) (string, int) {
			cfg, _ := crashedDaemon(t)
			return cfg.SocketPath, sleepPID
		}, ErrNotDaemon},
		// PID reuse: the state file names this PID but another start time,
		// the way it reads after the daemon died and its PID went to sleep.
		{"start time mismatch", func(t *testing.T) (string, int) {
			cfg, _ := crashedDaemon(t)
			st, err := ReadState(cfg.SocketPath)
			if err != nil {
				t.Fatal(err)
			}
			st.PID, st.StartTime = sleepPID, sleepStart+1
			if err := writeState(st); err != nil {
				t.Fatal(err)
			}
			return cfg.SocketPath, sleepPID
		}, ErrNotDaemon},
		// A state file for another socket path (moved or copied).
		{"state for another socket", func(t *testing.T) (string, int) {
			cfg, _ := crashedDaemon(t)
			st, err := ReadState(cfg.SocketPath)
			if err != nil {
				t.Fatal(err)
			}
			st.PID, st.StartTime, st.Socket = sleepPID, sleepStart, "/elsewhere.sock"
			b, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(StatePath(cfg.SocketPath), b, 0o600); err != nil {
				t.Fatal(err)
			}
			return cfg.SocketPath, sleepPID
		}, ErrNotDaemon},
		// No state file: the PID must hold the listening socket, and a live
		// unrelated process does not.
		{"no state file, pid does not hold the socket", func(t *testing.T) (string, int) {
			cfg := fakeConfig(t)
			startFake(t, cfg)
			if err := os.Remove(StatePath(cfg.SocketPath)); err != nil {
				t.Fatal(err)
			}
			return cfg.SocketPath, sleepPID
		}, ErrNotDaemon},
		// A forged state file that names the unrelated process exactly
		// (pid, start time, socket), as stop would believe it: one that
		// group or others may write, and one another user owns, are not
		// believed.
		{"forged state, writable by others", func(t *testing.T) (string, int) {
			return forgeState(t, sleepPID, sleepStart, 0o666, -1), sleepPID
		}, ErrNotDaemon},
		{"forged state, another user's", func(t *testing.T) (string, int) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			return forgeState(t, sleepPID, sleepStart, 0o600, 65534), sleepPID
		}, ErrNotDaemon},
		// A state file that is not JSON.
		{"corrupt state file", func(t *testing.T) (string, int) {
			cfg, _ := crashedDaemon(t)
			if err := os.WriteFile(StatePath(cfg.SocketPath), []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
			return cfg.SocketPath, sleepPID
		}, ErrNotDaemon},
		// Never init, never ourselves, never PID <= 0.
		{"pid 1", func(t *testing.T) (string, int) { return "/tmp/x.sock", 1 }, ErrNotDaemon},
		{"own pid", func(t *testing.T) (string, int) { return "/tmp/x.sock", os.Getpid() }, ErrNotDaemon},
		{"pid 0", func(t *testing.T) (string, int) { return "/tmp/x.sock", 0 }, ErrInvalidPID},
		{"pid -1", func(t *testing.T) (string, int) { return "/tmp/x.sock", -1 }, ErrInvalidPID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, pid := tc.setup(t)
			sockBefore, stateBefore := fileExists(sock), fileExists(StatePath(sock))
			err := StopByPID(context.Background(), pid, sock, WithStopTimeout(100*time.Millisecond))
			if !errors.Is(err, tc.want) {
				t.Fatalf("StopByPID = %v, want %v", err, tc.want)
			}
			if !running(sleepPID, sleepStart) {
				t.Fatal("the unrelated process was signalled")
			}
			if fileExists(sock) != sockBefore || fileExists(StatePath(sock)) != stateBefore {
				t.Fatal("a refusal removed files")
			}
		})
	}
}

// forgeState leaves a crashed daemon's socket with a state file naming
// pid and start, with mode perm, owned by uid (unless -1).
func forgeState(t *testing.T, pid int, start uint64, perm os.FileMode, uid int) string {
	t.Helper()
	cfg, _ := crashedDaemon(t)
	st, err := ReadState(cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	st.PID, st.StartTime = pid, start
	if err := writeState(st); err != nil {
		t.Fatal(err)
	}
	p := StatePath(cfg.SocketPath)
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return cfg.SocketPath
}

// TestStopByPIDGone proves StopByPID is idempotent: a PID that no longer
// exists (crashed daemon, or a PID that never existed) is not an error,
// and the leftovers of the daemon are removed.
func TestStopByPIDGone(t *testing.T) {
	t.Run("crashed daemon", func(t *testing.T) {
		cfg, pid := crashedDaemon(t)
		if err := StopByPID(context.Background(), pid, cfg.SocketPath); err != nil {
			t.Fatal(err)
		}
		if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
			t.Fatal("leftovers not removed")
		}
	})
	t.Run("never existed", func(t *testing.T) {
		pid := unusedPID(t)
		sock := filepath.Join(shortTempDir(t), "stale.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		if err := StopByPID(context.Background(), pid, sock); err != nil {
			t.Fatal(err)
		}
		if exists(t, sock) {
			t.Fatal("stale socket not removed")
		}
		// Nothing there at all: still nil.
		if err := StopByPID(context.Background(), pid, sock); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another daemon's state and live socket are kept", func(t *testing.T) {
		cfg := fakeConfig(t)
		d := startFake(t, cfg)
		if err := StopByPID(context.Background(), unusedPID(t), cfg.SocketPath); err != nil {
			t.Fatal(err)
		}
		if !exists(t, cfg.SocketPath) || !exists(t, StatePath(cfg.SocketPath)) {
			t.Fatal("the live daemon's socket or state file was removed")
		}
		select {
		case <-d.Done():
			t.Fatal("the live daemon died")
		default:
		}
	})
}

// unusedPID returns a PID no process has right now.
func unusedPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := max - 1; pid > max-1000; pid-- {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); errors.Is(err, os.ErrNotExist) {
			return pid
		}
	}
	t.Fatal("no unused pid")
	return 0
}

// TestStopByPIDNotASocket proves StopByPID never removes or follows what
// is not a socket at the socket path: a regular file, a directory, a
// symlink (to a file, or to a live socket) are reported with
// socket.ErrNotSocket and left as they were, targets included.
func TestStopByPIDNotASocket(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p string) func(t *testing.T) // returns a check
	}{
		// A regular file: reported, content intact.
		{"regular file", func(t *testing.T, p string) func(t *testing.T) {
			if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if b, err := os.ReadFile(p); err != nil || string(b) != "precious" {
					t.Fatalf("file changed: %q %v", b, err)
				}
			}
		}},
		// A directory.
		{"directory", func(t *testing.T, p string) func(t *testing.T) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
					t.Fatal("directory changed")
				}
			}
		}},
		// A symlink to a file: neither the link nor the target goes.
		{"symlink to a file", func(t *testing.T, p string) func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "target")
			if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if l, err := os.Readlink(p); err != nil || l != target {
					t.Fatal("symlink changed")
				}
				if b, err := os.ReadFile(target); err != nil || string(b) != "precious" {
					t.Fatal("target changed")
				}
			}
		}},
		// A symlink to a stale socket: not followed, the socket stays.
		{"symlink to a socket", func(t *testing.T, p string) func(t *testing.T) {
			target := filepath.Join(shortTempDir(t), "target.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: target, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if fi, err := os.Lstat(target); err != nil || fi.Mode().Type() != os.ModeSocket {
					t.Fatal("the symlink's target socket was removed")
				}
				if _, err := os.Readlink(p); err != nil {
					t.Fatal("symlink removed")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(shortTempDir(t), "fsd.sock")
			check := tc.setup(t, p)
			err := StopByPID(context.Background(), unusedPID(t), p)
			if !errors.Is(err, socket.ErrNotSocket) {
				t.Fatalf("StopByPID = %v, want socket.ErrNotSocket", err)
			}
			check(t)
		})
	}
	// With a live PID and no state file, the same paths are a refusal.
	sleepPID, sleepStart := startSleep(t)
	p := filepath.Join(shortTempDir(t), "fsd.sock")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := StopByPID(context.Background(), sleepPID, p); !errors.Is(err, ErrNotDaemon) {
		t.Fatalf("StopByPID = %v, want ErrNotDaemon", err)
	}
	if !running(sleepPID, sleepStart) || !exists(t, p) {
		t.Fatal("signalled or removed")
	}
}
