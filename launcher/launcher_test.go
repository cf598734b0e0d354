package launcher

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go/mocktracer"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/readiness"
	"github.com/fsd-launcher/fsd-launcher/socket"
)

// TestStartStop is the happy path, and proves three of the Kata launcher's
// bugs absent: the PID is set and is the process that serves the socket,
// the state file records it, and Stop reaps the child (no zombie) and
// removes the socket and the state file.
func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	cfg := fakeConfig(t, "-fake.pid-file="+pidFile, "-fake.check-socket")
	d := startFake(t, cfg)

	if d.PID() <= 0 {
		t.Fatalf("PID() = %d", d.PID())
	}
	if got := readPIDFile(t, pidFile); got != d.PID() {
		t.Fatalf("PID() = %d, the daemon says it is %d", d.PID(), got)
	}
	if d.SocketPath() != cfg.SocketPath {
		t.Fatalf("SocketPath() = %q, want %q", d.SocketPath(), cfg.SocketPath)
	}
	held, err := socket.HeldBy(d.PID(), cfg.SocketPath)
	if err != nil || !held {
		t.Fatalf("HeldBy(PID, socket) = %v, %v; the PID must be the process serving the socket", held, err)
	}
	c, err := net.Dial("unix", cfg.SocketPath)
	if err != nil {
		t.Fatalf("the daemon does not accept on its socket: %v", err)
	}
	c.Close()
	// Parent directory created 0700, socket 0600 (the defaults).
	if fi, err := os.Stat(filepath.Dir(cfg.SocketPath)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Lstat(cfg.SocketPath); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket: %v, %v", fi.Mode(), err)
	}

	start := startTime(t, d.PID())
	st, err := ReadState(cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	ino, err := socket.ListenerInode(cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	want := State{PID: d.PID(), StartTime: start, Socket: cfg.SocketPath, SocketInode: ino, Daemon: fakeDaemon, Builtin: false, LauncherVersion: st.LauncherVersion, StartedAt: st.StartedAt}
	if *st != want || st.StartedAt.IsZero() || st.LauncherVersion == "" {
		t.Fatalf("state file:\n got %+v\nwant %+v", *st, want)
	}
	if fi, err := os.Stat(StatePath(cfg.SocketPath)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v, %v", fi.Mode(), err)
	}

	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-d.Done():
	default:
		t.Fatal("Done not closed after Stop returned")
	}
	assertReaped(t, d.PID(), start)
	var ee *ExitError
	if err := d.Wait(); !errors.As(err, &ee) || ee.Signal != syscall.SIGTERM {
		t.Fatalf("Wait() = %v, want death by SIGTERM", err)
	}
	if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
		t.Fatal("socket or state file left after Stop")
	}
	// Stop is idempotent.
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestReadinessWaitsForTheLine proves the readiness wait really happens: a
// daemon that prints its ready line late is not reported ready early. The
// fake creates a file just before it prints the line; Start must not return
// before that file exists.
func TestReadinessWaitsForTheLine(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "ready")
	cfg := fakeConfig(t, "-fake.ready-after=700ms", "-fake.ready-file="+readyFile, "-fake.message=fsd: read")
	startFake(t, cfg)
	if !exists(t, readyFile) {
		t.Fatal("Start returned before the daemon printed its ready line")
	}
}

// TestStartFailures proves that every way a daemon can fail to become
// ready is reported, not dropped, with the reason and the daemon's last
// lines, and that the child is killed, reaped, and its socket and state
// file removed.
func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		timeout  time.Duration
		want     error
		exitCode int // -1: no *ExitError expected (killed by the launcher)
		message  string
	}{
		// A daemon that never prints its line: the timeout kills and reaps it.
		{"timeout", []string{"-fake.never-ready", "-fake.message=still loading the export"}, 300 * time.Millisecond, readiness.ErrTimeout, -1, "still loading the export"},
		// A daemon that exits first: ErrExited, with its status and message.
		{"exit before ready", []string{"-fake.exit-early=3", "-fake.message=cannot open shared dir"}, generous, readiness.ErrExited, 3, "cannot open shared dir"},
		// Exit status 0 before readiness is still a failure to start.
		{"exit 0 before ready", []string{"-fake.exit-early=0", "-fake.message=nothing to do"}, generous, readiness.ErrExited, -1, "nothing to do"},
		// A daemon that closes stderr and keeps running can never report
		// readiness: it is killed.
		{"stderr closed", []string{"-fake.message=closing my stderr", "-fake.close-stderr"}, generous, readiness.ErrStreamClosed, -1, "closing my stderr"},
		// Garbage and a very long line before the exit do not hide the message.
		{"garbage then exit", []string{"-fake.long-line=1048576", "-fake.garbage", "-fake.message=bad flag", "-fake.exit-early=2"}, generous, readiness.ErrExited, 2, "bad flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			cfg := fakeConfig(t, append([]string{"-fake.pid-file=" + pidFile}, tc.args...)...)
			cfg.ReadyTimeout = config.Duration(tc.timeout)
			d, err := Start(context.Background(), cfg)
			if err == nil {
				_ = d.Stop(context.Background())
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v does not wrap %v", err, tc.want)
			}
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *StartError", err)
			}
			if got := readPIDFile(t, pidFile); se.PID != got {
				t.Fatalf("StartError.PID = %d, the daemon was %d", se.PID, got)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error does not carry the daemon's last line %q:\n%v", tc.message, err)
			}
			var ee *ExitError
			switch {
			case tc.exitCode < 0 && errors.As(err, &ee):
				t.Fatalf("unexpected exit error %v", ee)
			case tc.exitCode >= 0 && (!errors.As(err, &ee) || ee.Code != tc.exitCode):
				t.Fatalf("error %v: want exit status %d", err, tc.exitCode)
			}
			assertNotOurs(t, se.PID)
			if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
				t.Fatal("socket or state file left after a failed start")
			}
		})
	}
}

// TestFailedStartKillsForkedChild proves a failed start leaves no process
// behind, not even a child the daemon forked that holds the socket.
func TestFailedStartKillsForkedChild(t *testing.T) {
	childFile := filepath.Join(t.TempDir(), "child")
	cfg := fakeConfig(t, "-fake.fork-child="+childFile, "-fake.never-ready")
	cfg.ReadyTimeout = config.Duration(300 * time.Millisecond)
	_, err := Start(context.Background(), cfg)
	var se *StartError
	if !errors.As(err, &se) || !errors.Is(err, readiness.ErrTimeout) {
		t.Fatalf("Start = %v", err)
	}
	assertNotOurs(t, se.PID)
	assertNotOurs(t, readPIDFile(t, childFile))
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

// assertNotOurs fails when pid is still the fake daemon, running or as a
// zombie (the PID itself may have been reused by an unrelated process).
func assertNotOurs(t *testing.T, pid int) {
	t.Helper()
	ps, err := readProcStat(pid)
	if errors.Is(err, errNoProcess) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if ps.State == 'Z' && ps.PPID == os.Getpid() {
		t.Fatalf("pid %d is an unreaped child (zombie)", pid)
	}
	if exe == fakeDaemon {
		t.Fatalf("pid %d is still the daemon (state %c)", pid, ps.State)
	}
}

// TestStartContextCancelled proves a cancelled context ends the readiness
// wait with the context's error, and the daemon is killed and reaped.
func TestStartContextCancelled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cfg := fakeConfig(t, "-fake.pid-file="+pidFile, "-fake.never-ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for !fileExists(pidFile) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := Start(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	assertNotOurs(t, readPIDFile(t, pidFile))
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestNoFDLeakIntoChild proves the daemon inherits fds 0-3 and nothing
// else, even a descriptor the launcher holds without O_CLOEXEC (one it
// inherited from its own parent, or a careless library's), which exec.Cmd
// alone would pass on. The fake lists /proc/self/fd before its runtime can
// open anything.
func TestNoFDLeakIntoChild(t *testing.T) {
	leaky, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leaky)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	fdsFile := filepath.Join(t.TempDir(), "fds")
	cfg := fakeConfig(t, "-fake.list-fds="+fdsFile)
	startFake(t, cfg)
	b, err := os.ReadFile(fdsFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		fd, target, _ := strings.Cut(line, " ")
		n, err := strconv.Atoi(fd)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		got[n] = target
	}
	var fds []int
	for fd := range got {
		fds = append(fds, fd)
	}
	sort.Ints(fds)
	if !reflect.DeepEqual(fds, []int{0, 1, 2, 3}) {
		t.Fatalf("the daemon has fds %v (%v), want exactly 0-3", fds, got)
	}
	ino, err := socket.ListenerInode(cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := "socket:[" + strconv.FormatUint(ino, 10) + "]"; got[3] != want {
		t.Fatalf("fd 3 is %q, want the listening socket %q", got[3], want)
	}
	if got[0] != "/dev/null" || !strings.HasPrefix(got[1], "pipe:") || got[1] != got[2] {
		t.Fatalf("stdio: %v", got)
	}
}

// TestNoLeaksInLauncher proves Start/Stop cycles (attached, detached, and a
// failed start) leave no descriptor and no goroutine behind in the
// launcher process.
func TestNoLeaksInLauncher(t *testing.T) {
	cycle := func() {
		cfg := fakeConfig(t)
		d, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		cfg = fakeConfig(t)
		d, err = Start(context.Background(), cfg, Detached())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		cfg = fakeConfig(t, "-fake.exit-early=1")
		if _, err := Start(context.Background(), cfg); err == nil {
			t.Fatal("Start of a failing daemon succeeded")
		}
		cfg = fakeConfig(t, "-fake.never-ready")
		cfg.ReadyTimeout = config.Duration(100 * time.Millisecond)
		if _, err := Start(context.Background(), cfg, Detached()); err == nil {
			t.Fatal("Start of a never-ready daemon succeeded")
		}
	}
	cycle() // the runtime opens its poller and such once
	fdsBefore := listFDs(t)
	goroutinesBefore := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		cycle()
	}
	if after := listFDs(t); !reflect.DeepEqual(after, fdsBefore) {
		t.Fatalf("descriptors before: %v\nafter: %v", fdsBefore, after)
	}
	deadline := time.Now().Add(generous)
	for runtime.NumGoroutine() > goroutinesBefore {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after:\n%s", goroutinesBefore, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listFDs returns this process's descriptors and their targets.
func listFDs(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && !strings.HasSuffix(l, "/fd") {
			m[e.Name()] = l
		}
	}
	return m
}

// TestDetached proves the detached mode: the daemon runs in its own
// session, its stdout and stderr go to the log file, and readiness is read
// from the log file's end as it was before the start, so an old ready line
// from an earlier run does not count.
func TestDetached(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "ready")
	cfg := fakeConfig(t, "-fake.ready-after=700ms", "-fake.ready-file="+readyFile, "-fake.stdout=hello on stdout")
	if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.LogFilePath(), []byte("fakedaemon[1]: fsd: ready (an earlier run)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startFake(t, cfg, Detached())
	if !exists(t, readyFile) {
		t.Fatal("Start returned before the daemon printed its ready line (the old line matched)")
	}
	if sid, err := unix.Getsid(d.PID()); err != nil || sid != d.PID() {
		t.Fatalf("session of the daemon = %d, %v; want its own (%d)", sid, err, d.PID())
	}
	log, err := os.ReadFile(cfg.LogFilePath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"an earlier run", "hello on stdout", "[" + strconv.Itoa(d.PID()) + "]: fsd: ready"} {
		if !strings.Contains(string(log), want) {
			t.Fatalf("log file lacks %q:\n%s", want, log)
		}
	}
	start := startTime(t, d.PID())
	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertReaped(t, d.PID(), start)
	if exists(t, cfg.SocketPath) || exists(t, StatePath(cfg.SocketPath)) {
		t.Fatal("socket or state file left after Stop")
	}
}

// TestDetachedFailure proves a detached daemon that exits before it is
// ready is reported with its status and its last lines, read from the new
// part of the log file (created 0600).
func TestDetachedFailure(t *testing.T) {
	cfg := fakeConfig(t, "-fake.message=boom: detached", "-fake.exit-early=4")
	_, err := Start(context.Background(), cfg, Detached())
	var se *StartError
	if !errors.As(err, &se) || !errors.Is(err, readiness.ErrExited) {
		t.Fatalf("Start = %v, want a StartError wrapping ErrExited", err)
	}
	if se.Exit == nil || se.Exit.Code != 4 {
		t.Fatalf("exit = %v, want status 4", se.Exit)
	}
	if len(se.Output) == 0 || se.Output[len(se.Output)-1] != "boom: detached" {
		t.Fatalf("output = %q", se.Output)
	}
	if fi, err := os.Stat(cfg.LogFilePath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file: %v, %v", fi.Mode(), err)
	}
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

// TestStartErrorOutput proves a failed start reports the first lines of a
// long output as well as the last ones (a daemon that dies at once says why
// first, then prints its usage), attached and detached, also when the log
// file holds more than the launcher reads.
func TestStartErrorOutput(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		detached bool
		first    string
		marker   string
		last     string
	}{
		// 41 lines: the first 5, a marker for the 16 in between, the last 20.
		{"attached", []string{"-fake.message=bad flag -x", "-fake.lines=40", "-fake.exit-early=2"}, false,
			"bad flag -x", "[... 16 lines omitted ...]", "usage line 40"},
		// The same read back from the log file.
		{"detached", []string{"-fake.message=bad flag -x", "-fake.lines=40", "-fake.exit-early=2"}, true,
			"bad flag -x", "[... 16 lines omitted ...]", "usage line 40"},
		// More than the launcher reads back from the log file: the first
		// lines, then the end of the file.
		{"detached, huge log", []string{"-fake.message=bad flag -y", "-fake.long-line=2000000", "-fake.lines=3", "-fake.exit-early=2"}, true,
			"bad flag -y", "[... lines omitted ...]", "usage line 3"},
		// Short output: all of it, no marker.
		{"short", []string{"-fake.message=bad flag -z", "-fake.lines=3", "-fake.exit-early=2"}, false,
			"bad flag -z", "", "usage line 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeConfig(t, tc.args...)
			var opts []Option
			if tc.detached {
				opts = append(opts, Detached())
			}
			_, err := Start(context.Background(), cfg, opts...)
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Start = %v", err)
			}
			out := se.Output
			if len(out) == 0 || out[0] != tc.first || out[len(out)-1] != tc.last {
				t.Fatalf("output = %q", out)
			}
			hasMarker := false
			for _, l := range out {
				hasMarker = hasMarker || l == tc.marker
			}
			if tc.marker != "" && !hasMarker {
				t.Fatalf("no %q in %q", tc.marker, out)
			}
			if len(out) > headLines+1+tailLines {
				t.Fatalf("%d lines reported", len(out))
			}
			if !strings.Contains(err.Error(), tc.first) {
				t.Fatalf("the message lacks the first line:\n%v", err)
			}
		})
	}
}

// TestHeadTail proves which lines of an output a StartError reports.
func TestHeadTail(t *testing.T) {
	lines := func(from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, strconv.Itoa(i))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		n    int
		want []string
	}{
		// Nothing at all.
		{"empty", 0, nil},
		// Up to tailLines: everything, once.
		{"fits the tail", tailLines, lines(1, tailLines)},
		// One more: the first line joins, nothing repeated, nothing omitted.
		{"one more", tailLines + 1, lines(1, tailLines+1)},
		// Head and tail just touch.
		{"touching", headLines + tailLines, lines(1, headLines+tailLines)},
		// A gap: head, marker, tail.
		{"gap", 100, append(append(lines(1, headLines), "[... 75 lines omitted ...]"), lines(100-tailLines+1, 100)...)},
	} {
		h := newHeadTail()
		for _, l := range lines(1, tc.n) {
			h.add(l)
		}
		if got := h.get(); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// TestDaemonDiesWithLauncher proves the attached daemon does not outlive a
// launcher that is SIGKILLed (Pdeathsig SIGTERM, set from a locked thread).
func TestDaemonDiesWithLauncher(t *testing.T) {
	cfg := fakeConfig(t)
	pid, helper := runHelper(t, "attached", cfg)
	start := startTime(t, pid)
	if !running(pid, start) {
		t.Fatal("daemon not running")
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	waitGone(t, pid, start) // fails if it is still running after a generous wait
}

// TestStaleSocketReplaced proves a socket file left by a crashed run
// (nothing listens) does not stop the next start.
func TestStaleSocketReplaced(t *testing.T) {
	cfg := fakeConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.SocketPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	startFake(t, cfg)
}

// TestLiveSocketRefused proves Start refuses a socket path something
// listens on, starts nothing, and leaves the live listener serving.
func TestLiveSocketRefused(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cfg := fakeConfig(t, "-fake.pid-file="+pidFile)
	if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.SocketPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Start(context.Background(), cfg); !errors.Is(err, socket.ErrInUse) {
		t.Fatalf("Start = %v, want socket.ErrInUse", err)
	}
	if exists(t, pidFile) {
		t.Fatal("a daemon was started")
	}
	go func() {
		if c, err := net.Dial("unix", cfg.SocketPath); err == nil {
			c.Close()
		}
	}()
	_ = l.SetDeadline(time.Now().Add(generous))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("the live listener no longer serves: %v", err)
	}
	c.Close()
}

// TestStartInvalidConfig proves an invalid configuration is refused before
// anything is created, with an error naming the key.
func TestStartInvalidConfig(t *testing.T) {
	cfg := fakeConfig(t)
	cfg.SocketPath = "relative.sock"
	_, err := Start(context.Background(), cfg)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "socket_path") {
		t.Fatalf("Start = %v, want config.ErrInvalid naming socket_path", err)
	}
	if exists(t, "relative.sock") {
		t.Fatal("socket created")
	}
	if _, err := Start(context.Background(), nil); err == nil {
		t.Fatal("Start(nil) succeeded")
	}
}

// TestStopSIGKILLAndSpans proves Stop kills a daemon that ignores SIGTERM
// once the stop timeout passes, and that start, ready, stop and kill are
// traced with the subsystem, pid and socket tags.
func TestStopSIGKILLAndSpans(t *testing.T) {
	tr := mocktracer.New()
	cfg := fakeConfig(t, "-fake.ignore-term")
	cfg.StopTimeout = config.Duration(300 * time.Millisecond)
	d := startFake(t, cfg, WithTracer(tr))
	start := startTime(t, d.PID())
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertReaped(t, d.PID(), start)
	var ee *ExitError
	if err := d.Wait(); !errors.As(err, &ee) || ee.Signal != syscall.SIGKILL {
		t.Fatalf("Wait() = %v, want death by SIGKILL", err)
	}

	spans := map[string]*mocktracer.MockSpan{}
	for _, s := range tr.FinishedSpans() {
		spans[s.OperationName] = s
	}
	for _, name := range []string{"launcher.start", "launcher.ready", "launcher.stop", "launcher.kill"} {
		s := spans[name]
		if s == nil {
			t.Fatalf("no %s span among %v", name, tr.FinishedSpans())
		}
		if s.Tag("subsystem") != "launcher" || s.Tag("pid") != d.PID() || s.Tag("socket") != cfg.SocketPath {
			t.Fatalf("%s tags = %v", name, s.Tags())
		}
		if s.Tag("error") != nil {
			t.Fatalf("%s marked failed: %v", name, s.Tags())
		}
	}
	if spans["launcher.ready"].ParentID != spans["launcher.start"].SpanContext.SpanID {
		t.Fatal("launcher.ready is not a child of launcher.start")
	}
	if spans["launcher.kill"].ParentID != spans["launcher.stop"].SpanContext.SpanID {
		t.Fatal("launcher.kill is not a child of launcher.stop")
	}
}

// TestFailedStartSpans proves a failed start marks its spans failed and
// traces the kill.
func TestFailedStartSpans(t *testing.T) {
	tr := mocktracer.New()
	cfg := fakeConfig(t, "-fake.never-ready")
	cfg.ReadyTimeout = config.Duration(100 * time.Millisecond)
	if _, err := Start(context.Background(), cfg, WithTracer(tr)); err == nil {
		t.Fatal("Start succeeded")
	}
	got := map[string]bool{}
	for _, s := range tr.FinishedSpans() {
		got[s.OperationName] = s.Tag("error") == true
	}
	if !got["launcher.start"] || !got["launcher.ready"] {
		t.Fatalf("start and ready spans not marked failed: %v", got)
	}
	if _, ok := got["launcher.kill"]; !ok {
		t.Fatalf("no launcher.kill span: %v", got)
	}
}

// TestStopExitCodes proves an exit caused by Stop's SIGTERM is not an
// error of Stop whatever its status (virtiofsd exits 1), while Wait still
// reports it; and that a cancelled context makes Stop kill at once.
func TestStopExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		ctx    func() context.Context
		code   int
		signal syscall.Signal
	}{
		// Exit status 1 on SIGTERM, like virtiofsd.
		{"status 1 on SIGTERM", []string{"-fake.term-code=1"}, context.Background, 1, 0},
		// Exit status 0 on SIGTERM: Wait is nil too.
		{"status 0 on SIGTERM", []string{"-fake.term-code=0"}, context.Background, 0, 0},
		// A cancelled context: no waiting out the stop timeout, SIGKILL.
		{"cancelled context", []string{"-fake.ignore-term"}, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, -1, syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fakeConfig(t, tc.args...)
			d := startFake(t, cfg)
			if err := d.Stop(tc.ctx()); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			err := d.Wait()
			var ee *ExitError
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("Wait() = %v, want nil", err)
			case tc.code != 0 && (!errors.As(err, &ee) || ee.Code != tc.code || ee.Signal != tc.signal):
				t.Fatalf("Wait() = %v, want code %d signal %v", err, tc.code, tc.signal)
			}
		})
	}
}

// TestForkedChildStopped proves Stop also stops a child the daemon forked
// that holds the socket and would survive its parent.
func TestForkedChildStopped(t *testing.T) {
	childFile := filepath.Join(t.TempDir(), "child")
	cfg := fakeConfig(t, "-fake.fork-child="+childFile)
	d := startFake(t, cfg)
	child := readPIDFile(t, childFile)
	childStart := startTime(t, child)
	if held, err := socket.HeldBy(child, cfg.SocketPath); err != nil || !held {
		t.Fatalf("the forked child does not hold the socket: %v %v", held, err)
	}
	start := startTime(t, d.PID())
	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertReaped(t, d.PID(), start)
	assertReaped(t, child, childStart)
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

// TestDaemonOutputLogged proves every line of an attached daemon reaches
// the logger with the daemon's PID, before and after readiness, including
// a 1 MiB line (truncated) and binary garbage (sanitized), and that the
// launcher's own entries carry subsystem=launcher.
func TestDaemonOutputLogged(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	cfg := fakeConfig(t, "-fake.long-line=1048576", "-fake.garbage", "-fake.message=before ready", "-fake.after-ready=after ready")
	d := startFake(t, cfg, WithLogger(logrus.NewEntry(logger)))
	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range hook.AllEntries() {
		if e.Data["subsystem"] != "launcher" {
			t.Fatalf("entry without subsystem=launcher: %v", e.Data)
		}
		if e.Data["daemon"] != d.PID() {
			continue
		}
		if len(e.Message) > readiness.DefaultMaxLine {
			t.Fatalf("a logged line of %d bytes", len(e.Message))
		}
		if strings.ContainsRune(e.Message, 0) {
			t.Fatalf("a NUL byte reached the log: %q", e.Message)
		}
		switch {
		case strings.HasPrefix(e.Message, "xxxx"):
			seen["long"] = true
		case strings.HasPrefix(e.Message, "garbage"):
			seen["garbage"] = true
		case e.Message == "before ready", e.Message == "after ready":
			seen[e.Message] = true
		}
	}
	for _, k := range []string{"long", "garbage", "before ready", "after ready"} {
		if !seen[k] {
			t.Fatalf("line %q not logged (seen %v)", k, seen)
		}
	}
}

// TestBuiltinArgv proves the built-in daemon is started with exactly the
// documented serve flags, daemon.args last, and the built-in ready line.
func TestBuiltinArgv(t *testing.T) {
	argsFile := filepath.Join(t.TempDir(), "args")
	cfg := fakeConfig(t, "-fake.args-file="+argsFile)
	cfg.Daemon.Path = ""
	cfg.Daemon.ReadyLine = config.DefaultReadyLine
	cfg.ReadOnly = true
	cfg.Mounts = []config.Mount{{Tag: "data", Source: t.TempDir(), ReadOnly: true}}
	cfg.Sandbox = config.SandboxNone
	cfg.Limits.MaxFids = 100
	startFake(t, cfg, WithExecutable(fakeDaemon))
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ServeArgs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("argv:\n got %q\nwant %q", got, want)
	}
	st, err := ReadState(cfg.SocketPath)
	if err != nil || !st.Builtin || st.Daemon != fakeDaemon {
		t.Fatalf("state = %+v, %v; want builtin", st, err)
	}
}

// TestReadyLineDefault proves the launcher's fallback ready line for the
// built-in daemon is fsd's, and the configuration's default.
func TestReadyLineDefault(t *testing.T) {
	for name, l := range map[string]string{"fsd.ReadyLine": fsd.ReadyLine, "config.DefaultReadyLine": config.DefaultReadyLine} {
		if l != fsdReadyLine {
			t.Errorf("fsdReadyLine %q, %s %q", fsdReadyLine, name, l)
		}
	}
}

// TestServeArgs proves the built-in daemon's argv for each configuration
// knob.
func TestServeArgs(t *testing.T) {
	base := func() *config.Config { return config.Default("/srv/share", "/run/fsd/a.sock") }
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		want []string
	}{
		// Defaults: only the required flags, log level and format.
		{"defaults", func(*config.Config) {},
			[]string{"serve", "--fd", "3", "--shared-dir", "/srv/share", "--log-level", "info", "--log-format", "text"}},
		// readonly, mounts (ro and rw, in file order), sandbox, limits, and
		// daemon.args appended last.
		{"everything", func(c *config.Config) {
			c.ReadOnly = true
			c.NoSetuid = true
			c.Mounts = []config.Mount{{Tag: "a", Source: "/srv/a"}, {Tag: "b", Source: "/srv/b", ReadOnly: true, Share: "vol"}}
			c.Log = config.Log{Level: "debug", Format: "json"}
			c.Sandbox = config.SandboxChroot
			poll := config.Duration(20 * time.Microsecond)
			c.BusyPoll = &poll
			c.Limits = config.Limits{MaxConnections: 4, MaxFids: 5, MaxInflight: 6, MaxMsize: 65536}
			c.Daemon.Args = []string{"--extra"}
		}, []string{"serve", "--fd", "3", "--shared-dir", "/srv/share", "--readonly", "--no-setuid",
			"--mount", "tag=a,source=/srv/a", "--mount", "tag=b,source=/srv/b,ro,share=vol",
			"--log-level", "debug", "--log-format", "json", "--sandbox", "chroot", "--busy-poll", "20µs",
			"--max-connections", "4", "--max-fids", "5", "--max-inflight", "6", "--max-msize", "65536", "--extra"}},
		// Empty log settings (a Config built by hand) fall back to the defaults.
		{"empty log settings", func(c *config.Config) { c.Log = config.Log{} },
			[]string{"serve", "--fd", "3", "--shared-dir", "/srv/share", "--log-level", "info", "--log-format", "text"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(c)
			got, err := ServeArgs(c)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	// A source with ',' cannot be expressed in --mount: refused, naming the key.
	c := base()
	c.Mounts = []config.Mount{{Tag: "a", Source: "/srv/a,b"}}
	if _, err := ServeArgs(c); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "mount[0].source") {
		t.Fatalf("ServeArgs = %v, want ErrInvalid naming mount[0].source", err)
	}
}

// TestExternalArgsExpanded proves an external daemon gets daemon.args with
// the placeholders filled in.
func TestExternalArgsExpanded(t *testing.T) {
	argsFile := filepath.Join(t.TempDir(), "args")
	cfg := fakeConfig(t, "--fd={fd}", "--socket-path={socket_path}", "-o", "source={shared_dir}", "-fake.args-file="+argsFile)
	startFake(t, cfg)
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--fd=3", "--socket-path=" + cfg.SocketPath, "-o", "source=" + cfg.SharedDir, "-fake.args-file=" + argsFile}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("argv:\n got %q\nwant %q", got, want)
	}
}

// TestMountNamespace proves the sandbox hand-off: as root, the built-in
// daemon starts in a mount namespace of its own unless the configured
// sandbox says otherwise; an external daemon never gets one.
func TestMountNamespace(t *testing.T) {
	requireRoot(t)
	ours, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		builtin bool
		sandbox string
		newNS   bool
	}{
		// Auto: the launcher creates the namespace, the daemon uses it.
		{"builtin auto", true, config.SandboxAuto, true},
		// Explicit namespace mode.
		{"builtin namespace", true, config.SandboxNamespace, true},
		// chroot and none need no namespace: none is created.
		{"builtin chroot", true, config.SandboxChroot, false},
		{"builtin none", true, config.SandboxNone, false},
		// An external daemon sandboxes itself.
		{"external", false, config.SandboxAuto, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nsFile := filepath.Join(t.TempDir(), "ns")
			cfg := fakeConfig(t, "-fake.mntns-file="+nsFile)
			cfg.Sandbox = tc.sandbox
			var opts []Option
			if tc.builtin {
				cfg.Daemon.Path = ""
				opts = append(opts, WithExecutable(fakeDaemon))
			}
			startFake(t, cfg, opts...)
			b, err := os.ReadFile(nsFile)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b) != ours; got != tc.newNS {
				t.Fatalf("daemon mount namespace %s, ours %s: new = %v, want %v", b, ours, got, tc.newNS)
			}
		})
	}
}

// TestExitError proves the exit status a shell would report.
func TestExitError(t *testing.T) {
	for _, tc := range []struct {
		e    ExitError
		code int
		text string
	}{
		// A plain status.
		{ExitError{Code: 3}, 3, "daemon exited with status 3"},
		// A signal: 128 + its number.
		{ExitError{Code: -1, Signal: syscall.SIGTERM}, 143, "daemon killed by signal 15 (terminated)"},
		{ExitError{Code: -1, Signal: syscall.SIGKILL}, 137, "daemon killed by signal 9 (killed)"},
	} {
		if tc.e.ExitCode() != tc.code || tc.e.Error() != tc.text {
			t.Errorf("%+v: ExitCode %d, Error %q; want %d, %q", tc.e, tc.e.ExitCode(), tc.e.Error(), tc.code, tc.text)
		}
	}
}

// TestParseProcStat proves the /proc/PID/stat parser copes with command
// names holding spaces and parentheses, and rejects truncated input.
func TestParseProcStat(t *testing.T) {
	fields := " S 42 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n"
	for _, tc := range []struct {
		name string
		in   string
		want procStat
		ok   bool
	}{
		// An ordinary name.
		{"plain", "123 (sleep)" + fields, procStat{State: 'S', PPID: 42, StartTime: 987654}, true},
		// A name with a space and a ')' must not shift the fields.
		{"tricky name", "123 (a b) c)" + fields, procStat{State: 'S', PPID: 42, StartTime: 987654}, true},
		// Truncated: not enough fields.
		{"truncated", "123 (x) S 42 1", procStat{}, false},
		// No command name at all.
		{"garbage", "garbage", procStat{}, false},
	} {
		got, err := parseProcStat(123, []byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: got %+v, %v", tc.name, got, err)
		}
	}
	// And the real thing: our own start time is stable.
	a, err := readProcStat(os.Getpid())
	if err != nil || a.PPID != os.Getppid() || a.StartTime == 0 {
		t.Fatalf("readProcStat(self) = %+v, %v", a, err)
	}
}

// TestMountNamespaceRefused proves the fallback of the sandbox hand-off:
// when the kernel refuses CLONE_NEWNS (EPERM, as in a restricted
// container), sandbox auto starts the daemon without a namespace of its own
// and logs it, while an explicit sandbox = "namespace" fails.
func TestMountNamespaceRefused(t *testing.T) {
	requireRoot(t)
	ours, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	startCmd = func(cmd *exec.Cmd) error {
		attempts++
		if cmd.SysProcAttr.Cloneflags&syscall.CLONE_NEWNS != 0 {
			return &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: syscall.EPERM}
		}
		return startLocked(cmd)
	}
	defer func() { startCmd = startLocked }()

	nsFile := filepath.Join(t.TempDir(), "ns")
	cfg := fakeConfig(t, "-fake.mntns-file="+nsFile)
	cfg.Daemon.Path = ""
	logger, hook := logtest.NewNullLogger()
	startFake(t, cfg, WithExecutable(fakeDaemon), WithLogger(logrus.NewEntry(logger)))
	if b, err := os.ReadFile(nsFile); err != nil || string(b) != ours {
		t.Fatalf("daemon mount namespace %s (%v), want ours %s", b, err, ours)
	}
	if attempts != 2 {
		t.Fatalf("%d start attempts, want 2", attempts)
	}
	warned := false
	for _, e := range hook.AllEntries() {
		warned = warned || (e.Level == logrus.WarnLevel && strings.Contains(e.Message, "mount and pid namespaces"))
	}
	if !warned {
		t.Fatal("the fallback was not logged")
	}

	cfg = fakeConfig(t)
	cfg.Daemon.Path = ""
	cfg.Sandbox = config.SandboxNamespace
	if _, err := Start(context.Background(), cfg, WithExecutable(fakeDaemon)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("Start with sandbox namespace = %v, want EPERM", err)
	}
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket left behind")
	}
}

// TestDetachedLogFileNotRegular proves a log_file that is a FIFO (or any
// non-regular file) is refused without hanging, and nothing is left.
func TestDetachedLogFileNotRegular(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cfg := fakeConfig(t, "-fake.pid-file="+pidFile)
	cfg.LogFile = filepath.Join(t.TempDir(), "log.fifo")
	if err := unix.Mkfifo(cfg.LogFile, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), cfg, Detached())
	// Opening a FIFO without a reader fails (ENXIO) rather than blocking;
	// with a reader it would open and be refused as not a regular file.
	if err == nil || !strings.Contains(err.Error(), cfg.LogFile) {
		t.Fatalf("Start = %v, want a refusal naming the FIFO", err)
	}
	if exists(t, cfg.SocketPath) || exists(t, pidFile) {
		t.Fatal("socket created or daemon started")
	}
}

// TestStartCancelledBefore proves a context cancelled before Start creates
// nothing.
func TestStartCancelledBefore(t *testing.T) {
	cfg := fakeConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	if exists(t, cfg.SocketPath) {
		t.Fatal("socket created")
	}
}
