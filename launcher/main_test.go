package launcher

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// fakeDaemon is the path of the fake daemon built by TestMain.
var fakeDaemon string

// helperEnv makes the test binary act as a launcher process (see
// helperMain): tests that need the launcher to be another process (a
// daemon that is not our child, a launcher that gets SIGKILLed) re-execute
// the test binary with it.
const helperEnv = "LAUNCHER_TEST_HELPER"

// generous bounds a wait that should end quickly; it only keeps a broken
// test from hanging, it asserts nothing about speed.
const generous = 30 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	// Orphans of processes these tests start (a detached daemon whose
	// launcher exited, a child whose parent died) are re-parented to this
	// process instead of an init that may not reap them; the tests reap
	// them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "launcher-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeDaemon = filepath.Join(dir, "fakedaemon")
	build := exec.Command("go", "build", "-o", fakeDaemon, "./testdata/fakedaemon")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fake daemon:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helperMain is a minimal launcher process. It reads a JSON config from
// LAUNCHER_TEST_CONFIG, starts the daemon (detached for mode "detached",
// attached for "attached"), prints the PID on stdout, then exits
// (detached) or blocks until killed (attached).
func helperMain(mode string) int {
	var cfg config.Config
	if err := json.Unmarshal([]byte(os.Getenv("LAUNCHER_TEST_CONFIG")), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	var opts []Option
	if mode == "detached" {
		opts = append(opts, Detached())
	}
	d, err := Start(context.Background(), &cfg, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println(d.PID())
	if mode == "detached" {
		return 0
	}
	for {
		time.Sleep(time.Hour) // until killed
	}
}

// runHelper starts the daemon of cfg from another process (see helperMain)
// and returns the daemon's PID and the helper's command (already waited
// for in detached mode).
func runHelper(t *testing.T, mode string, cfg *config.Config) (int, *exec.Cmd) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "LAUNCHER_TEST_CONFIG="+string(b))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper printed no pid: %v", err)
	}
	if mode == "detached" {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	return pid, cmd
}

// shortTempDir is a temporary directory with a short path (t.TempDir's
// can exceed the 107 bytes of sun_path with long test names).
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// fakeConfig is a valid configuration for the fake daemon, with fakeArgs
// as daemon.args. The socket's directory does not exist yet.
func fakeConfig(t *testing.T, fakeArgs ...string) *config.Config {
	t.Helper()
	cfg := config.Default(t.TempDir(), filepath.Join(shortTempDir(t), "run", "fsd.sock"))
	cfg.Daemon.Path = fakeDaemon
	cfg.Daemon.Args = fakeArgs
	cfg.Daemon.ReadyLine = "fsd: ready"
	cfg.ReadyTimeout = config.Duration(generous)
	cfg.StopTimeout = config.Duration(generous)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("fake config invalid: %v", err)
	}
	return cfg
}

// startFake starts the fake daemon attached, with a Stop at cleanup.
func startFake(t *testing.T, cfg *config.Config, opts ...Option) *Daemon {
	t.Helper()
	d, err := Start(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	return d
}

// startTime returns /proc/PID/stat's start time, failing the test when
// the process does not exist.
func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	ps, err := readProcStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return ps.StartTime
}

// assertReaped fails unless the process (pid, start) is gone for good: no
// /proc entry, not even a zombie (a later process with the same PID has
// another start time).
func assertReaped(t *testing.T, pid int, start uint64) {
	t.Helper()
	ps, err := readProcStat(pid)
	if err == nil && ps.StartTime == start {
		t.Fatalf("pid %d still exists in state %c (a zombie is a process nobody reaped)", pid, ps.State)
	}
	if err != nil && !errors.Is(err, errNoProcess) {
		t.Fatal(err)
	}
}

// waitGone waits (generously) until the process (pid, start) has exited,
// reaps it when it is our child (a re-parented orphan), and fails if it
// does not go away.
func waitGone(t *testing.T, pid int, start uint64) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if ps, err := readProcStat(pid); err != nil || ps.StartTime != start {
		return // another process now
	}
	if !pidfdReadable(fd, generous) {
		t.Fatalf("pid %d still running after %v", pid, generous)
	}
	var info unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
}

// running reports whether the process (pid, start) exists and is not a
// zombie.
func running(pid int, start uint64) bool {
	ps, err := readProcStat(pid)
	return err == nil && ps.StartTime == start && ps.State != 'Z'
}

// readPIDFile reads a PID the fake daemon wrote.
func readPIDFile(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// exists reports whether something is at p (without following a symlink).
func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// startSleep starts an unrelated process and returns its PID and start
// time; it is killed and reaped at cleanup.
func startSleep(t *testing.T) (int, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd.Process.Pid, startTime(t, cmd.Process.Pid)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}
