package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// launcherBin is the real fsd-launcher, built once by TestMain. Every test
// drives it through its CLI; the daemons are `fsd-launcher serve`
// processes it starts.
var launcherBin string

// generous only bounds a wait so a broken test fails instead of hanging;
// nothing here asserts speed unless a test says why.
const generous = 30 * time.Second

func TestMain(m *testing.M) {
	// A detached daemon outlives `start`, and a daemon whose `run` was
	// killed outlives `run`. Orphans are re-parented to the nearest
	// subreaper: make that this process, so the tests reap them (the
	// container's PID 1 may not) and can tell a zombie from a live daemon.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "reliability: PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "reliability-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		os.Exit(1)
	}
	launcherBin = filepath.Join(dir, "fsd-launcher")
	// CGO_ENABLED=0 as `make build` does: the daemon's sandbox wants a
	// static binary.
	build := exec.Command("go", "build", "-trimpath", "-o", launcherBin, "github.com/fsd-launcher/fsd-launcher/cmd/fsd-launcher")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "reliability: go build ./cmd/fsd-launcher:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireRoot skips a test that needs root, saying why.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root (%s); CI runs it as root", why)
	}
}

// result is how a CLI invocation ended.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs the binary with args and returns its output and exit code.
func cli(t testing.TB, args ...string) result {
	t.Helper()
	r, err := runCLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runCLI is cli for goroutines other than the test's: it returns errors.
func runCLI(args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*generous)
	defer cancel()
	cmd := exec.CommandContext(ctx, launcherBin, args...)
	cmd.Env = cliEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	begin := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(begin)}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return r, nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		r.code = ee.ExitCode()
		return r, nil
	}
	return r, errors.Wrapf(err, "%s %s (stderr: %s)", launcherBin, strings.Join(args, " "), errb.String())
}

// cliEnv is the environment of every launcher the tests run, which the
// daemons inherit: this process's, with GOTRACEBACK=all so that SIGQUIT
// makes a daemon print every goroutine (see daemon.quit) whatever the
// caller's setting.
func cliEnv() []string {
	return append(os.Environ(), "GOTRACEBACK=all")
}

// shortDir returns a fresh directory with a path short enough for a unix
// socket below it (t.TempDir's names can pass 108 bytes in subtests).
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// setup is one daemon's world: a shared directory, a socket path and a
// configuration file naming them.
type setup struct {
	dir    string // holds everything below
	shared string // shared_dir, the root export
	sock   string // socket_path (its directory is created by the launcher)
	cfg    string // the configuration file
}

// logFile is where a detached daemon's output goes (the default log_file).
func (s *setup) logFile() string { return s.sock + ".log" }

// stateFile is the launcher's state file for the socket.
func (s *setup) stateFile() string { return s.sock + ".state" }

// newSetup writes a configuration for the built-in daemon with sandbox
// "none" (these tests are about faults, not confinement), generous
// timeouts, and extra top-level TOML lines (top) and tables (tables).
func newSetup(t testing.TB, top, tables string) *setup {
	t.Helper()
	dir := shortDir(t)
	s := &setup{dir: dir, shared: filepath.Join(dir, "shared"), sock: filepath.Join(dir, "run", "fsd.sock")}
	if err := os.Mkdir(s.shared, 0o755); err != nil {
		t.Fatal(err)
	}
	s.cfg = filepath.Join(dir, "fsd.toml")
	s.write(t, top, tables)
	return s
}

// write (re)writes the configuration file.
func (s *setup) write(t testing.TB, top, tables string) {
	t.Helper()
	toml := fmt.Sprintf(`socket_path = %s
shared_dir = %s
sandbox = "none"
ready_timeout = "30s"
stop_timeout = "10s"
%s
[log]
level = "warn"
%s
`, quote(s.sock), quote(s.shared), top, tables)
	if err := os.WriteFile(s.cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// quote writes s as a TOML basic string (JSON's escapes are valid TOML).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// daemon is a daemon started with `fsd-launcher start`.
type daemon struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
	start  uint64 // /proc start time: with PID, the process identity
}

// startDaemon runs `start` on s's configuration and returns the daemon.
// The test's cleanup stops it (when still alive) and reaps it.
func startDaemon(t testing.TB, s *setup) *daemon {
	t.Helper()
	d, err := startDaemonErr(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

// startDaemonErr is startDaemon for goroutines: no cleanup is registered.
func startDaemonErr(cfg string) (*daemon, error) {
	r, err := runCLI("start", "--config", cfg)
	if err != nil {
		return nil, err
	}
	if r.code != 0 {
		return nil, errors.Errorf("start --config %s: exit %d\n%s", cfg, r.code, r.stderr)
	}
	var d daemon
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.PID <= 0 {
		return nil, errors.Errorf("start printed %q: %v", r.stdout, err)
	}
	if d.start = startTime(d.PID); d.start == 0 {
		return nil, errors.Errorf("daemon %d is not running after start", d.PID)
	}
	return &d, nil
}

// stopArgs are the arguments of `stop` for d.
func (d *daemon) stopArgs() []string {
	return []string{"stop", "--pid", strconv.Itoa(d.PID), "--socket", d.Socket}
}

// stop runs `stop`, which must exit 0, and waits for the daemon to be
// gone (reaping it: it is this process's orphan).
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	if r := cli(t, d.stopArgs()...); r.code != 0 {
		t.Fatalf("stop: exit %d\n%s", r.code, r.stderr)
	}
	waitGone(t, d.PID, d.start)
}

// cleanup stops the daemon if a test left it running.
func (d *daemon) cleanup(t testing.TB) {
	if alive(d.PID, d.start) {
		if r, err := runCLI(d.stopArgs()...); err != nil || r.code != 0 {
			t.Errorf("cleanup: stop daemon %d: %v %+v", d.PID, err, r)
			_ = unix.Kill(d.PID, unix.SIGKILL)
		}
	}
	waitGone(t, d.PID, d.start)
}

// alive reports whether d is still running (a zombie is not).
func (d *daemon) alive() bool { return alive(d.PID, d.start) }

// quit sends SIGQUIT, which makes the Go runtime print every goroutine's
// stack on the daemon's stderr (the log file) and exit, waits for the exit
// and returns the goroutines that run the program's code. The daemon is
// gone afterwards; its socket and state file are left for `stop`.
func (d *daemon) quit(t testing.TB, logFile string) []string {
	t.Helper()
	fi, err := os.Stat(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(d.PID, unix.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	waitGone(t, d.PID, d.start)
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(fi.Size(), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	dump, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	gs := userGoroutines(string(dump))
	if len(gs) == 0 {
		t.Fatalf("no goroutine dump after SIGQUIT in %s:\n%s", logFile, dump)
	}
	return gs
}

// goroutineHeader starts a goroutine's block in a Go traceback.
var goroutineHeader = regexp.MustCompile(`(?m)^goroutine \d+ .*\[([^\]]*)\]:$`)

// userGoroutines returns, from a SIGQUIT dump, one line per goroutine that
// runs code of this module or of os/signal (the runtime's own goroutines,
// whose number changes with the garbage collector's activity, are left
// out): its state and its innermost function of this module.
func userGoroutines(dump string) []string {
	var out []string
	locs := goroutineHeader.FindAllStringSubmatchIndex(dump, -1)
	for i, loc := range locs {
		end := len(dump)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		block := dump[loc[1]:end]
		state := dump[loc[2]:loc[3]]
		fn := ""
		for _, line := range strings.Split(block, "\n") {
			if strings.HasPrefix(line, "\t") || !strings.Contains(line, "(") {
				continue
			}
			name := line[:strings.LastIndexByte(line, '(')]
			if strings.HasPrefix(name, "github.com/fsd-launcher/") || strings.HasPrefix(name, "os/signal.") {
				fn = name
				break
			}
		}
		if fn != "" {
			// The state may carry a wait time ("IO wait, 2 minutes").
			state, _, _ = strings.Cut(state, ",")
			out = append(out, state+" "+fn)
		}
	}
	return out
}

// startTime returns the start time (field 22 of /proc/PID/stat) of pid, 0
// when there is no such process.
func startTime(pid int) uint64 {
	f := statFields(pid)
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// procState returns the state letter of pid ('Z' for a zombie), 0 when
// there is no such process.
func procState(pid int) byte {
	f := statFields(pid)
	if len(f) == 0 {
		return 0
	}
	return f[0][0]
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3 first), nil when there is no such process.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// alive reports whether the process (pid, start) runs and is not a zombie.
func alive(pid int, start uint64) bool {
	return start != 0 && startTime(pid) == start && procState(pid) != 'Z'
}

// waitGone waits (generously) for the process (pid, start) to exit,
// reaps it when it is this process's child (orphans are, see TestMain),
// and returns how long the wait took. It fails the test if the process
// does not exit.
func waitGone(t testing.TB, pid int, start uint64) time.Duration {
	t.Helper()
	d, err := waitGoneErr(pid, start, generous)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitGoneErr is waitGone for goroutines, with its own bound.
func waitGoneErr(pid int, start uint64, bound time.Duration) (time.Duration, error) {
	begin := time.Now()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return 0, nil
	}
	if err != nil {
		return 0, errors.Wrapf(err, "pidfd_open(%d)", pid)
	}
	defer unix.Close(fd)
	if startTime(pid) != start {
		return 0, nil // the PID names another process now
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 50)
		if err == nil && n > 0 {
			break
		}
		if time.Since(begin) > bound {
			return time.Since(begin), errors.Errorf("pid %d still running after %v", pid, bound)
		}
	}
	took := time.Since(begin)
	var info unix.Siginfo
	for {
		// ECHILD: not our child, someone else reaps it.
		if err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return took, nil
}

// exists reports whether anything (a symlink included) is at p.
func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// fdCount returns how many descriptors process pid has open.
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("count the fds of %d: %v", pid, err)
	}
	return len(ents)
}

// waitFDs waits until pid has want descriptors open and fails the test
// with the count it saw last if it never does.
func waitFDs(t testing.TB, pid, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for {
		n := fdCount(t, pid)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the daemon has %d fds open, baseline %d", what, n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memory is a process's thread count and memory from /proc/PID/status.
type memory struct {
	Threads int
	RSS     int // VmRSS, KiB
	HWM     int // VmHWM (peak RSS), KiB
}

func (m memory) String() string {
	return fmt.Sprintf("threads %d, VmRSS %.1f MiB, VmHWM %.1f MiB", m.Threads, float64(m.RSS)/1024, float64(m.HWM)/1024)
}

// procMemory reads /proc/PID/status.
func procMemory(t testing.TB, pid int) memory {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("read the status of %d: %v", pid, err)
	}
	var m memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "Threads":
			m.Threads = n
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.HWM = n
		}
	}
	return m
}

// daemonProcesses lists the live processes running the binary under
// test: the daemons (`serve`) and any launcher still running.
func daemonProcesses(t testing.TB) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == launcherBin {
			out = append(out, pid)
		}
	}
	return out
}

// leftovers lists the socket, state and temporary state files below dir.
func leftovers(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type()&os.ModeSocket != 0 || strings.HasSuffix(p, ".state") || strings.Contains(e.Name(), ".state.tmp") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
