package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// lockedBuffer is a bytes.Buffer a running command writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runProc is `fsd-launcher run` and the daemon it started.
type runProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	waited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result, set before waited closes
	pid    int           // the daemon's
	start  uint64        // the daemon's start time
}

// startRun starts `run` on s's configuration and returns once its daemon
// is ready (the state file names a running process). The test's cleanup
// ends run and its daemon if the test did not.
func startRun(t *testing.T, s *setup) *runProc {
	t.Helper()
	r := &runProc{stderr: &lockedBuffer{}, waited: make(chan struct{})}
	r.cmd = exec.Command(launcherBin, "run", "--config", s.cfg)
	r.cmd.Env = cliEnv()
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.waited:
		default:
			_ = r.cmd.Process.Signal(unix.SIGTERM)
			<-r.waited
		}
		if r.pid > 0 {
			waitGone(t, r.pid, r.start)
		}
	})
	deadline := time.Now().Add(generous)
	for {
		b, err := os.ReadFile(s.stateFile())
		var st struct {
			PID int `json:"pid"`
		}
		if err == nil && json.Unmarshal(b, &st) == nil && st.PID > 0 {
			if r.start = startTime(st.PID); r.start != 0 {
				r.pid = st.PID
				return r
			}
		}
		select {
		case <-r.waited:
			t.Fatalf("run exited before its daemon was ready: %v\n%s", r.err, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run never got ready:\n%s", r.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exitCode waits (generously) for run to exit and returns its exit code.
func (r *runProc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-r.waited:
	case <-time.After(generous):
		t.Fatalf("run did not exit:\n%s", r.stderr)
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return 0
}

// serving opens a 9P session on sock with fid 2 open on the file name, and
// proves the daemon serves it by reading want back.
func serving(t *testing.T, sock, name, want string) *client {
	t.Helper()
	c := session(t, sock, 8192)
	if err := c.open(2, p9.ReadOnly, name); err != nil {
		t.Fatal(err)
	}
	got, err := c.read(2, 0, 100)
	if err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
	return c
}

// hungUp reports whether the client's connection was ended by the other
// side: a request fails with end of file or a reset, not a timeout.
func hungUp(c *client) bool {
	_, err := c.read(2, 0, 1)
	return err != nil && c.closedByServer()
}

// writeFile writes a file for a test, failing it on error.
func writeFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unusedPID returns a PID that no process has right now.
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

// TestItem01DaemonKilledWhileServing proves issue item 1: "The daemon is
// SIGKILLed while serving: `run` reports it and exits non-zero; `stop --pid
// --socket` afterwards exits 0 and removes the socket and state." It does
// so for both ways of launching: `run` (which cleans up itself) and
// `start` (whose socket and state file stay until `stop`).
func TestItem01DaemonKilledWhileServing(t *testing.T) {
	t.Run("run", func(t *testing.T) {
		s := newSetup(t, "", "")
		writeFile(t, filepath.Join(s.shared, "f"), "data")
		run := startRun(t, s)
		c := serving(t, s.sock, "f", "data")
		if err := unix.Kill(run.pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := run.exitCode(t); code != 128+int(unix.SIGKILL) {
			t.Fatalf("run exited %d, want %d (128 + SIGKILL)\n%s", code, 128+int(unix.SIGKILL), run.stderr)
		}
		if !strings.Contains(run.stderr.String(), "killed by signal 9") {
			t.Fatalf("run did not report the kill:\n%s", run.stderr)
		}
		if !hungUp(c) {
			t.Fatal("the client's connection did not end with the daemon")
		}
		waitGone(t, run.pid, run.start)
		if r := cli(t, "stop", "--pid", strconv.Itoa(run.pid), "--socket", s.sock); r.code != 0 {
			t.Fatalf("stop after the kill: exit %d\n%s", r.code, r.stderr)
		}
		if exists(s.sock) || exists(s.stateFile()) {
			t.Fatal("socket or state file left behind")
		}
	})
	t.Run("start", func(t *testing.T) {
		s := newSetup(t, "", "")
		writeFile(t, filepath.Join(s.shared, "f"), "data")
		d := startDaemon(t, s)
		c := serving(t, s.sock, "f", "data")
		if err := unix.Kill(d.PID, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, d.PID, d.start)
		if !hungUp(c) {
			t.Fatal("the client's connection did not end with the daemon")
		}
		// Nobody was there to clean up: the socket and state file stay.
		if !exists(s.sock) || !exists(s.stateFile()) {
			t.Fatal("socket or state file vanished without stop")
		}
		if r := cli(t, d.stopArgs()...); r.code != 0 {
			t.Fatalf("stop after the kill: exit %d\n%s", r.code, r.stderr)
		}
		if exists(s.sock) || exists(s.stateFile()) {
			t.Fatal("stop left the socket or the state file")
		}
		if r := cli(t, "status", "--pid", strconv.Itoa(d.PID), "--socket", d.Socket); r.code != 1 {
			t.Fatalf("status of the killed daemon: exit %d, want 1\n%s", r.code, r.stdout)
		}
	})
}

// deathBound is the "exits within 2 s" for a daemon whose `run`
// was SIGKILLed. It is asserted, not only measured, because it is the
// guarantee itself, and it is reliable: the kernel sends the parent-death
// SIGTERM as the launcher dies, and the daemon's exit path (close the
// listener and connections, wait for in-flight requests on a quiet
// export) takes milliseconds: measured at 1 to 5 ms on an idle 2-core
// machine under -race, and at most 143 ms with two CPU hogs competing for
// the two cores while the whole package ran, so 2 s leaves a margin of
// more than 10 on a loaded machine.
const deathBound = 2 * time.Second

// TestItem02LauncherKilled proves issue item 2: "The launcher in `run`
// mode is SIGKILLed: the daemon notices (parent-death signal with the
// forking thread locked, or EOF on a pipe from the launcher) and exits
// within 2 s, leaving no orphan. (After `start`, the daemon is detached
// and keeps serving by design.)"
func TestItem02LauncherKilled(t *testing.T) {
	t.Run("run SIGKILLed", func(t *testing.T) {
		s := newSetup(t, "", "")
		writeFile(t, filepath.Join(s.shared, "f"), "data")
		run := startRun(t, s)
		// A busy daemon: a client holds an open file.
		c := serving(t, s.sock, "f", "data")
		begin := time.Now()
		if err := run.cmd.Process.Signal(unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, run.pid, run.start)
		took := time.Since(begin)
		t.Logf("the daemon exited %v after its launcher was SIGKILLed", took.Round(time.Microsecond))
		if took > deathBound {
			t.Errorf("the daemon took %v to exit after its launcher died, the guarantee is %v", took, deathBound)
		}
		<-run.waited
		if !hungUp(c) {
			t.Fatal("the client's connection did not end with the daemon")
		}
		if ps := daemonProcesses(t); len(ps) != 0 {
			t.Fatalf("processes of %s left: %v", launcherBin, ps)
		}
		// run had no chance to clean up; stop does it.
		if r := cli(t, "stop", "--pid", strconv.Itoa(run.pid), "--socket", s.sock); r.code != 0 {
			t.Fatalf("stop: exit %d\n%s", r.code, r.stderr)
		}
		if exists(s.sock) || exists(s.stateFile()) {
			t.Fatal("socket or state file left behind")
		}
	})
	t.Run("start detaches", func(t *testing.T) {
		s := newSetup(t, "", "")
		writeFile(t, filepath.Join(s.shared, "f"), "data")
		d := startDaemon(t, s)
		// `start` has exited; the daemon leads its own session and serves.
		sid, err := unix.Getsid(d.PID)
		if err != nil || sid != d.PID {
			t.Fatalf("the daemon's session is %d (%v), want its own (%d)", sid, err, d.PID)
		}
		serving(t, s.sock, "f", "data")
		r := cli(t, "status", "--pid", strconv.Itoa(d.PID), "--socket", d.Socket)
		var st struct {
			Alive   bool  `json:"alive"`
			Answers *bool `json:"answers"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || !st.Alive || st.Answers == nil || !*st.Answers {
			t.Fatalf("status: exit %d %s (%v)", r.code, r.stdout, err)
		}
		d.stop(t)
	})
}

// spawnWithPID starts name with args as process pid: it sets the kernel's
// last allocated PID (/proc/sys/kernel/ns_last_pid, root only) to pid-1
// and forks, retrying when another fork on the machine wins the race. It
// returns nil when it never gets the PID.
func spawnWithPID(t *testing.T, pid int, name string, args ...string) *exec.Cmd {
	t.Helper()
	for range 200 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot set ns_last_pid (%v): PID reuse cannot be staged here", err)
		}
		cmd := exec.Command(name, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			return cmd
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return nil
}

// TestItem03PIDReuseRefused proves issue item 3: "PID reuse: the recorded
// PID now belongs to another process: stop refuses and signals nothing."
// The reuse is real: the daemon is killed, and a new process is made to
// get its PID.
func TestItem03PIDReuseRefused(t *testing.T) {
	requireRoot(t, "writes /proc/sys/kernel/ns_last_pid to hand the daemon's PID to another process")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary to play the process that reuses the PID")
	}
	s := newSetup(t, "", "")
	d := startDaemon(t, s)
	if err := unix.Kill(d.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, d.PID, d.start) // reaped: the PID is free
	state, err := os.ReadFile(s.stateFile())
	if err != nil {
		t.Fatal(err)
	}
	// Start times count clock ticks (10 ms); a real reuse is a whole PID
	// wrap-around away, so let a few ticks pass as it would.
	time.Sleep(50 * time.Millisecond)
	impostor := spawnWithPID(t, d.PID, sleep, "600")
	if impostor == nil {
		// Only another process taking the free PID first (a PID
		// wrap-around within milliseconds) makes this happen.
		t.Skipf("pid %d could not be handed to a new process in 200 tries", d.PID)
	}
	impStart := startTime(d.PID)
	t.Cleanup(func() {
		_ = impostor.Process.Kill()
		_ = impostor.Wait()
	})
	if impStart == d.start {
		t.Fatal("the new process has the daemon's start time; the test cannot tell them apart")
	}

	r := cli(t, d.stopArgs()...)
	if r.code != 1 || !strings.Contains(r.stderr, "refused, nothing was signalled") || !strings.Contains(r.stderr, "reused") {
		t.Fatalf("stop of a reused pid: exit %d, stderr %q; want 1 and a refusal naming the reuse", r.code, r.stderr)
	}
	// sleep dies at once from SIGTERM or SIGKILL: it is alive, so neither
	// was sent.
	if !alive(d.PID, impStart) {
		t.Fatal("the process that reused the pid was signalled")
	}
	if b, err := os.ReadFile(s.stateFile()); err != nil || !bytes.Equal(b, state) || !exists(s.sock) {
		t.Fatal("the refused stop changed the state file or the socket")
	}

	// Once that process is gone the PID names nothing: stop cleans up.
	_ = impostor.Process.Kill()
	_ = impostor.Wait()
	if r := cli(t, d.stopArgs()...); r.code != 0 {
		t.Fatalf("stop after the impostor exited: exit %d\n%s", r.code, r.stderr)
	}
	if exists(s.sock) || exists(s.stateFile()) {
		t.Fatal("socket or state file left behind")
	}
}

// TestItem04StopEdgeCases proves issue item 4: "Stop twice; stop a PID
// that never existed; stop with a socket path that is a regular file or a
// symlink: clear results, nothing else touched (never follow a symlink
// when removing)." A live daemon watches every row: it must be untouched.
func TestItem04StopEdgeCases(t *testing.T) {
	bs := newSetup(t, "", "")
	writeFile(t, filepath.Join(bs.shared, "f"), "bystander")
	bystander := startDaemon(t, bs)
	bsState, err := os.ReadFile(bs.stateFile())
	if err != nil {
		t.Fatal(err)
	}

	// Each row prepares a stop and returns its PID, socket path, the
	// expected exit code and text, and a check of what must be intact.
	type stopCase struct {
		pid   int
		sock  string
		code  int
		text  string
		check func(t *testing.T)
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T) stopCase
	}{
		// Stop twice: both exit 0, the daemon is gone with its socket and
		// state file.
		{"stop twice", func(t *testing.T) stopCase {
			s := newSetup(t, "", "")
			d := startDaemon(t, s)
			if r := cli(t, d.stopArgs()...); r.code != 0 {
				t.Fatalf("first stop: exit %d\n%s", r.code, r.stderr)
			}
			waitGone(t, d.PID, d.start)
			return stopCase{pid: d.PID, sock: s.sock, code: 0, check: func(t *testing.T) {
				if exists(s.sock) || exists(s.stateFile()) {
					t.Fatal("socket or state file left")
				}
			}}
		}},
		// A PID that never existed, with the live daemon's socket: exit 0
		// (nothing to stop), and the daemon, its socket and its state file
		// are untouched.
		{"pid never existed, live socket", func(t *testing.T) stopCase {
			return stopCase{pid: unusedPID(t), sock: bs.sock, code: 0}
		}},
		// A PID that never existed and nothing at the path: exit 0, and
		// nothing is created.
		{"pid never existed, no socket", func(t *testing.T) stopCase {
			p := filepath.Join(shortDir(t), "none.sock")
			return stopCase{pid: unusedPID(t), sock: p, code: 0, check: func(t *testing.T) {
				if exists(p) || exists(p+".state") {
					t.Fatal("stop created files")
				}
			}}
		}},
		// A regular file at the socket path: exit 1 naming it, the file
		// intact.
		{"regular file", func(t *testing.T) stopCase {
			p := filepath.Join(shortDir(t), "file.sock")
			writeFile(t, p, "precious")
			return stopCase{pid: unusedPID(t), sock: p, code: 1, text: "not a socket", check: func(t *testing.T) {
				if b, err := os.ReadFile(p); err != nil || string(b) != "precious" {
					t.Fatalf("the file changed: %q %v", b, err)
				}
			}}
		}},
		// A regular file at the path and a live PID (the bystander's):
		// refused, nothing signalled, the file intact.
		{"regular file, live pid", func(t *testing.T) stopCase {
			p := filepath.Join(shortDir(t), "file.sock")
			writeFile(t, p, "precious")
			return stopCase{pid: bystander.PID, sock: p, code: 1, text: "refused", check: func(t *testing.T) {
				if b, err := os.ReadFile(p); err != nil || string(b) != "precious" {
					t.Fatalf("the file changed: %q %v", b, err)
				}
			}}
		}},
		// A symlink to a regular file: exit 1, neither the link nor its
		// target is removed or written.
		{"symlink to a file", func(t *testing.T) stopCase {
			dir := shortDir(t)
			target, link := filepath.Join(dir, "target"), filepath.Join(dir, "link.sock")
			writeFile(t, target, "precious")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return stopCase{pid: unusedPID(t), sock: link, code: 1, text: "not a socket", check: func(t *testing.T) {
				if l, err := os.Readlink(link); err != nil || l != target {
					t.Fatalf("the symlink changed: %q %v", l, err)
				}
				if b, err := os.ReadFile(target); err != nil || string(b) != "precious" {
					t.Fatalf("the target changed: %q %v", b, err)
				}
			}}
		}},
		// A symlink to the live daemon's socket, with the daemon's own
		// PID: the symlink is not followed to the daemon, which is not
		// signalled (refused); link, socket and state stay.
		{"symlink to the live socket", func(t *testing.T) stopCase {
			link := filepath.Join(shortDir(t), "link.sock")
			if err := os.Symlink(bs.sock, link); err != nil {
				t.Fatal(err)
			}
			return stopCase{pid: bystander.PID, sock: link, code: 1, text: "refused", check: func(t *testing.T) {
				if l, err := os.Readlink(link); err != nil || l != bs.sock {
					t.Fatalf("the symlink changed: %q %v", l, err)
				}
			}}
		}},
		// A symlink to a stale socket (nothing listens): the stale socket
		// it points to is not removed through the link.
		{"symlink to a stale socket", func(t *testing.T) stopCase {
			dir := shortDir(t)
			stale, link := filepath.Join(dir, "stale.sock"), filepath.Join(dir, "link.sock")
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.Bind(fd, &unix.SockaddrUnix{Name: stale})
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(stale, link); err != nil {
				t.Fatal(err)
			}
			return stopCase{pid: unusedPID(t), sock: link, code: 1, text: "not a socket", check: func(t *testing.T) {
				if fi, err := os.Lstat(stale); err != nil || fi.Mode().Type() != os.ModeSocket {
					t.Fatal("the stale socket behind the symlink was removed")
				}
				if _, err := os.Readlink(link); err != nil {
					t.Fatal("the symlink was removed")
				}
			}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := tc.prepare(t)
			r := cli(t, "stop", "--pid", strconv.Itoa(sc.pid), "--socket", sc.sock)
			if r.code != sc.code || !strings.Contains(r.stderr, sc.text) {
				t.Fatalf("stop: exit %d, stderr %q; want %d and %q", r.code, r.stderr, sc.code, sc.text)
			}
			if sc.check != nil {
				sc.check(t)
			}
			// The bystander is untouched: same process, socket, state, and
			// it answers.
			if !bystander.alive() {
				t.Fatal("the bystander daemon was stopped")
			}
			if b, err := os.ReadFile(bs.stateFile()); err != nil || !bytes.Equal(b, bsState) {
				t.Fatal("the bystander's state file changed")
			}
			serving(t, bs.sock, "f", "bystander")
		})
	}
}

// TestItem05StartLiveRefusedStaleReplaced proves issue item 5: "Start while
// a daemon is live on the same socket: refused. Start after a crash left a
// stale socket: succeeds."
func TestItem05StartLiveRefusedStaleReplaced(t *testing.T) {
	s := newSetup(t, "", "")
	writeFile(t, filepath.Join(s.shared, "f"), "first")
	first := startDaemon(t, s)
	state, err := os.ReadFile(s.stateFile())
	if err != nil {
		t.Fatal(err)
	}
	// Another configuration (another export) on the same socket.
	other := newSetup(t, "", "")
	other.sock = s.sock
	other.write(t, "", "")
	r := cli(t, "start", "--config", other.cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "in use") {
		t.Fatalf("second start on a live socket: exit %d, stderr %q; want 1 and \"in use\"", r.code, r.stderr)
	}
	if ps := daemonProcesses(t); !slices.Equal(ps, []int{first.PID}) {
		t.Fatalf("daemons running: %v, want only %d", ps, first.PID)
	}
	if b, err := os.ReadFile(s.stateFile()); err != nil || !bytes.Equal(b, state) {
		t.Fatal("the refused start changed the live daemon's state file")
	}
	serving(t, s.sock, "f", "first")

	// A crash leaves the socket and the state file.
	if err := unix.Kill(first.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, first.PID, first.start)
	if !exists(s.sock) || !exists(s.stateFile()) {
		t.Fatal("the crash left no stale socket: nothing to prove")
	}
	writeFile(t, filepath.Join(s.shared, "f"), "second")
	second := startDaemon(t, s)
	if second.PID == first.PID {
		t.Fatal("same pid")
	}
	serving(t, s.sock, "f", "second")
	var st struct {
		PID int `json:"pid"`
	}
	if b, err := os.ReadFile(s.stateFile()); err != nil || json.Unmarshal(b, &st) != nil || st.PID != second.PID {
		t.Fatalf("state file names pid %d, want %d", st.PID, second.PID)
	}
	second.stop(t)
	if l := leftovers(t, s.dir); len(l) != 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// pidInError finds the daemon's PID in a start failure ("... (pid N) did
// not become ready ...").
var pidInError = regexp.MustCompile(`\(pid (\d+)\) did not become ready`)

// TestItem06StartFailsBeforeReady proves issue item 6: "The daemon never
// prints its ready line: start fails at ready_timeout and no process
// remains. The daemon exits with an error before ready: start fails at
// once, with the daemon's message."
func TestItem06StartFailsBeforeReady(t *testing.T) {
	tests := []struct {
		name string
		// readyTimeout is the configuration's ready_timeout.
		readyTimeout time.Duration
		// daemonTable is the [daemon] table.
		daemonTable string
		// want are texts stderr must hold.
		want []string
		// atTimeout: the failure comes at ready_timeout, not before.
		atTimeout bool
	}{
		// The real daemon serves, but the launcher waits for a line it
		// never prints: killed at ready_timeout.
		{"never ready", 2 * time.Second, "[daemon]\nready_line = \"fsd: this line is never printed\"",
			[]string{"not ready before the timeout"}, true},
		// The real daemon refuses its arguments and exits 2 before it is
		// ready: start fails at once (long before the 60 s timeout) and
		// shows the daemon's own message.
		{"exits before ready", 60 * time.Second, "[daemon]\nargs = [\"--max-msize\", \"1\"]",
			[]string{"exited before it was ready", "status 2", "--max-msize 1: want 4096 to"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, "", tc.daemonTable)
			// ready_timeout is in the template: replace its value.
			b, err := os.ReadFile(s.cfg)
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte(`ready_timeout = "30s"`), []byte(fmt.Sprintf("ready_timeout = %q", tc.readyTimeout)), 1)
			if err := os.WriteFile(s.cfg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			r := cli(t, "start", "--config", s.cfg)
			t.Logf("start failed after %v (ready_timeout %v)", r.took.Round(time.Millisecond), tc.readyTimeout)
			if r.code != 1 || r.stdout != "" {
				t.Fatalf("start: exit %d, stdout %q; want 1 and nothing", r.code, r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Fatalf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			// Not a timing assertion: which of the two outcomes happened.
			if tc.atTimeout && r.took < tc.readyTimeout {
				t.Fatalf("start gave up after %v, before ready_timeout %v", r.took, tc.readyTimeout)
			}
			if !tc.atTimeout && r.took >= tc.readyTimeout {
				t.Fatalf("start waited %v, the whole ready_timeout, for a daemon that had exited", r.took)
			}
			m := pidInError.FindStringSubmatch(r.stderr)
			if m == nil {
				t.Fatalf("no pid in the error:\n%s", r.stderr)
			}
			pid, _ := strconv.Atoi(m[1])
			if s := procState(pid); s != 0 {
				t.Fatalf("daemon %d is still there (state %c)", pid, s)
			}
			if ps := daemonProcesses(t); len(ps) != 0 {
				t.Fatalf("processes of %s left: %v", launcherBin, ps)
			}
			if l := leftovers(t, s.dir); len(l) != 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}
}

// TestItem07ManyStartsAndStops proves issue item 7: "50 starts and stops in
// a row, and 20 daemons at once on different sockets: each ready, each
// stopped; no leftover process, socket or fd."
func TestItem07ManyStartsAndStops(t *testing.T) {
	const (
		sequential = 50
		concurrent = 20
	)
	s := newSetup(t, "", "")
	writeFile(t, filepath.Join(s.shared, "f"), "data")
	var startTook, stopTook time.Duration
	var selfFDs, daemonFDs int
	begin := time.Now()
	for i := 0; i < sequential; i++ {
		t0 := time.Now()
		d := startDaemon(t, s)
		startTook += time.Since(t0)
		// Ready and idle: every daemon holds the same descriptors.
		if i == 0 {
			daemonFDs = fdCount(t, d.PID)
		} else if n := fdCount(t, d.PID); n != daemonFDs {
			t.Fatalf("start %d: the daemon has %d fds, the first had %d", i+1, n, daemonFDs)
		}
		serving(t, s.sock, "f", "data").close()
		t1 := time.Now()
		d.stop(t)
		stopTook += time.Since(t1)
		if l := leftovers(t, s.dir); len(l) != 0 {
			t.Fatalf("after stop %d: left behind %v", i+1, l)
		}
		if i == 0 {
			// The first round opened what this process keeps for good
			// (the network poller); count from here.
			selfFDs = fdCount(t, os.Getpid())
		}
	}
	t.Logf("%d sequential start+stop: %v in all; start %v, stop %v on average", sequential,
		time.Since(begin).Round(time.Millisecond), (startTook / sequential).Round(time.Millisecond), (stopTook / sequential).Round(time.Millisecond))

	setups := make([]*setup, concurrent)
	for i := range setups {
		setups[i] = newSetup(t, "", "")
		writeFile(t, filepath.Join(setups[i].shared, "f"), "data "+strconv.Itoa(i))
	}
	daemons := make([]*daemon, concurrent)
	errs := make([]error, concurrent)
	var wg sync.WaitGroup
	begin = time.Now()
	for i := range setups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			daemons[i], errs[i] = startDaemonErr(setups[i].cfg)
		}()
	}
	wg.Wait()
	startAll := time.Since(begin)
	for i, d := range daemons {
		if d != nil {
			t.Cleanup(func() { d.cleanup(t) })
		}
		if errs[i] != nil {
			t.Fatalf("concurrent start %d: %v", i, errs[i])
		}
	}
	for i, d := range daemons {
		// Nothing of a sibling started at the same time leaked into it.
		if n := fdCount(t, d.PID); n != daemonFDs {
			t.Fatalf("concurrent daemon %d has %d fds, a lone one %d", i, n, daemonFDs)
		}
		serving(t, setups[i].sock, "f", "data "+strconv.Itoa(i)).close()
	}
	begin = time.Now()
	for i, d := range daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := runCLI(d.stopArgs()...)
			if err == nil && r.code != 0 {
				err = errors.Errorf("exit %d: %s", r.code, r.stderr)
			}
			if err == nil {
				_, err = waitGoneErr(d.PID, d.start, generous)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	t.Logf("%d daemons at once: all started in %v, all stopped in %v", concurrent,
		startAll.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent stop %d: %v", i, err)
		}
	}
	if ps := daemonProcesses(t); len(ps) != 0 {
		t.Fatalf("processes of %s left: %v", launcherBin, ps)
	}
	for _, s := range setups {
		if l := leftovers(t, s.dir); len(l) != 0 {
			t.Fatalf("left behind: %v", l)
		}
	}
	if n := fdCount(t, os.Getpid()); n != selfFDs {
		t.Fatalf("this process has %d fds open, %d after the first round", n, selfFDs)
	}
}
