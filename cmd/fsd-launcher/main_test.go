package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// The CLI tests run the real binary, built once by TestMain (with a
// version stamped in through -ldflags), against the launcher tests' fake
// daemon configured through [daemon] path.
var (
	binary     string
	fakeDaemon string
)

const testVersion = "v0.0.0-clitest"

// generous only keeps a broken test from hanging; nothing asserts speed.
const generous = 30 * time.Second

func TestMain(m *testing.M) {
	// Orphans (the detached daemon once `start` exits, the daemon of a
	// killed `run`) are re-parented to this process, which reaps them,
	// instead of to an init that may not.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "cli-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fsd-launcher")
	fakeDaemon = filepath.Join(dir, "fakedaemon")
	for _, b := range [][]string{
		{"build", "-ldflags", "-X main.version=" + testVersion, "-o", binary, "."},
		{"build", "-o", fakeDaemon, "../../launcher/testdata/fakedaemon"},
	} {
		cmd := exec.Command("go", b...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "go", strings.Join(b, " "), ":", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v\nstderr: %s", binary, args, err, errb.String())
	return "", "", -1
}

// shortTempDir has a path short enough for a socket.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// writeConfig writes a configuration for the fake daemon with fakeArgs as
// daemon.args, plus extra TOML lines, and returns its path and socket path.
func writeConfig(t *testing.T, extra string, fakeArgs ...string) (string, string) {
	t.Helper()
	dir := shortTempDir(t)
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "fsd.sock")
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var args []string
	for _, a := range fakeArgs {
		args = append(args, q(a))
	}
	toml := fmt.Sprintf(`socket_path = %s
shared_dir = %s
ready_timeout = "30s"
stop_timeout = "30s"
%s
[daemon]
path = %s
args = [%s]
ready_line = "fsd: ready"
`, q(sock), q(shared), extra, q(fakeDaemon), strings.Join(args, ", "))
	p := filepath.Join(dir, "fsd.toml")
	if err := os.WriteFile(p, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, sock
}

// startTime returns the start time of pid from /proc/PID/stat, or 0 when
// there is no such process.
func startTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// procState returns the state letter of pid ('Z' for a zombie), 0 when gone.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))[0][0]
}

// waitGone waits (generously) for process (pid, start) to exit, reaps it
// when it is our child, and fails the test if it does not exit.
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
	if startTime(pid) != start {
		return
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(generous)
	for {
		n, err := unix.Poll(fds, 100)
		if err == nil && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running after %v", pid, generous)
		}
	}
	var info unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
}

func alive(pid int, start uint64) bool {
	return start != 0 && startTime(pid) == start && procState(pid) != 'Z'
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestHelp proves the top-level help lists every subcommand and the exit
// codes, and that misuse exits 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, _, code := cli(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		for _, c := range subcommands {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Fatalf("%v does not list %q:\n%s", args, c.name, out)
			}
		}
		if !strings.Contains(out, "Exit codes:") {
			t.Fatalf("%v does not document the exit codes", args)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		// No subcommand at all.
		{"none", nil},
		// An unknown subcommand.
		{"unknown subcommand", []string{"frobnicate"}},
		// A flag where the subcommand should be.
		{"unknown flag", []string{"--frobnicate"}},
		// help for an unknown subcommand.
		{"help unknown", []string{"help", "frobnicate"}},
	} {
		_, stderr, code := cli(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Fatalf("%s: exit %d, stderr %q; want 2 with the usage", tc.name, code, stderr)
		}
	}
}

// TestSubcommandHelp proves each subcommand's --help (and `help NAME`)
// exits 0 and mentions every one of its flags.
func TestSubcommandHelp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		// start: a configuration file, or a bundle with a socket.
		{"start", []string{"-config", "-bundle", "-socket"}},
		// stop: identity (pid + socket) and the SIGKILL timeout.
		{"stop", []string{"-pid", "-socket", "-timeout"}},
		// run: a configuration file.
		{"run", []string{"-config"}},
		// status: identity only.
		{"status", []string{"-pid", "-socket"}},
		// check-config: the file to check.
		{"check-config", []string{"-config"}},
		// version: no flags, still a help text with the exit codes.
		{"version", nil},
		// demo: only its log level.
		{"demo", []string{"-log-level"}},
	} {
		for _, args := range [][]string{{tc.name, "--help"}, {tc.name, "-h"}, {"help", tc.name}} {
			out, _, code := cli(t, args...)
			if code != 0 {
				t.Fatalf("%v: exit %d", args, code)
			}
			for _, f := range tc.flags {
				if !strings.Contains(out, f) {
					t.Fatalf("%v does not mention %s:\n%s", args, f, out)
				}
			}
			if !strings.Contains(out, "Usage: fsd-launcher "+tc.name) || !strings.Contains(out, "Exit codes:") {
				t.Fatalf("%v: no usage line or exit codes:\n%s", args, out)
			}
		}
	}
}

// TestBadFlags proves every kind of misuse exits 2 with the usage.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		// An unknown flag.
		{"unknown flag", []string{"start", "--nope"}},
		// A value of the wrong type.
		{"pid not a number", []string{"stop", "--pid", "x", "--socket", "/tmp/x.sock"}},
		// A required flag missing.
		{"no pid", []string{"stop", "--socket", "/tmp/x.sock"}},
		{"no socket", []string{"status", "--pid", "5"}},
		{"no config", []string{"check-config"}},
		{"run without config", []string{"run"}},
		// PID <= 0 is never valid.
		{"pid 0", []string{"stop", "--pid", "0", "--socket", "/tmp/x.sock"}},
		// A negative duration.
		{"negative timeout", []string{"stop", "--pid", "5", "--socket", "/tmp/x.sock", "--timeout", "-1s"}},
		// A stray positional argument.
		{"stray argument", []string{"version", "extra"}},
		// --socket without --bundle.
		{"socket without bundle", []string{"start", "--config", "/x.toml", "--socket", "/tmp/x.sock"}},
		// A relative socket path.
		{"relative socket", []string{"status", "--pid", "5", "--socket", "x.sock"}},
		{"relative socket for stop", []string{"stop", "--pid", "5", "--socket", "x.sock"}},
	} {
		_, stderr, code := cli(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("%s: exit %d, stderr %q; want 2 with the usage", tc.name, code, stderr)
		}
	}
}

// TestVersion proves the version set with -ldflags and the Go version.
func TestVersion(t *testing.T) {
	out, _, code := cli(t, "version")
	if code != 0 || !strings.Contains(out, "fsd-launcher "+testVersion) || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: exit %d:\n%s", code, out)
	}
}

// TestCheckConfig proves a valid file is "ok" and an invalid one exits 1
// naming the key.
func TestCheckConfig(t *testing.T) {
	good, _ := writeConfig(t, "")
	out, _, code := cli(t, "check-config", "--config", good)
	if code != 0 || out != "ok: "+good+"\n" {
		t.Fatalf("valid config: exit %d, %q", code, out)
	}
	for _, tc := range []struct {
		name, extra, key string
	}{
		// An unknown key is named.
		{"unknown key", "frobnicate = 1", "frobnicate"},
		// A value of the wrong type names its key.
		{"wrong type", "[limits]\nmax_fids = \"many\"", "max_fids"},
		// A value out of its set names its key.
		{"bad log level", "[log]\nlevel = \"loud\"", "level"},
		// A relative path names its key.
		{"relative path", "log_file = \"relative.log\"", "log_file"},
	} {
		bad, _ := writeConfig(t, tc.extra)
		_, stderr, code := cli(t, "check-config", "--config", bad)
		if code != 1 || !strings.Contains(stderr, tc.key) {
			t.Fatalf("%s: exit %d, stderr %q; want 1 naming %s", tc.name, code, stderr, tc.key)
		}
	}
	_, stderr, code := cli(t, "check-config", "--config", "/nonexistent/fsd.toml")
	if code != 1 || !strings.Contains(stderr, "/nonexistent/fsd.toml") {
		t.Fatalf("missing file: exit %d, %q", code, stderr)
	}
}

// startedDaemon is what `start` printed.
type startedDaemon struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
}

// cliStart runs `start` and decodes its one JSON line.
func cliStart(t *testing.T, cfg string) startedDaemon {
	t.Helper()
	out, stderr, code := cli(t, "start", "--config", cfg)
	if code != 0 {
		t.Fatalf("start: exit %d\n%s", code, stderr)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("start printed %q, want exactly one line", out)
	}
	var sd startedDaemon
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sd); err != nil || sd.PID <= 0 || sd.Socket == "" {
		t.Fatalf("start printed %q: %v", out, err)
	}
	return sd
}

// statusOf runs `status` and decodes its JSON.
func statusOf(t *testing.T, sd startedDaemon) (map[string]any, int) {
	t.Helper()
	out, stderr, code := cli(t, "status", "--pid", strconv.Itoa(sd.PID), "--socket", sd.Socket)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status printed %q (%s): %v", out, stderr, err)
	}
	return m, code
}

// TestStartStatusStop is the CLI round trip: start prints one JSON line and
// leaves a running daemon; status reports it (exit 0); stop ends it and
// cleans up (exit 0, and again 0); status then exits 1.
func TestStartStatusStop(t *testing.T) {
	cfg, sock := writeConfig(t, "")
	sd := cliStart(t, cfg)
	if sd.Socket != sock {
		t.Fatalf("socket %q, want %q", sd.Socket, sock)
	}
	start := startTime(sd.PID)
	if !alive(sd.PID, start) {
		t.Fatal("the daemon is not running after start")
	}
	m, code := statusOf(t, sd)
	if code != 0 || m["alive"] != true || m["socket_listening"] != true || m["identity_ok"] != true || m["answers"] != nil {
		t.Fatalf("status: exit %d, %v", code, m)
	}
	for i := 0; i < 2; i++ { // idempotent
		_, stderr, code := cli(t, "stop", "--pid", strconv.Itoa(sd.PID), "--socket", sd.Socket)
		if code != 0 {
			t.Fatalf("stop #%d: exit %d\n%s", i+1, code, stderr)
		}
	}
	waitGone(t, sd.PID, start)
	if exists(sock) || exists(sock+".state") {
		t.Fatal("socket or state file left after stop")
	}
	m, code = statusOf(t, sd)
	if code != 1 || m["alive"] != false || m["socket_listening"] != false {
		t.Fatalf("status after stop: exit %d, %v", code, m)
	}
}

// TestStartFailure proves a daemon that dies before it is ready makes
// start exit 1 with the reason and the daemon's last lines on stderr, and
// leaves no process and no socket.
func TestStartFailure(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cfg, sock := writeConfig(t, "", "-fake.pid-file="+pidFile, "-fake.message=cannot serve: disk on fire", "-fake.exit-early=3")
	out, stderr, code := cli(t, "start", "--config", cfg)
	if code != 1 || out != "" {
		t.Fatalf("start: exit %d, stdout %q", code, out)
	}
	for _, want := range []string{"cannot serve: disk on fire", "exited before it was ready", "status 3"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	if s := procState(pid); s != 0 && s != 'Z' {
		t.Fatalf("daemon %d still running (%c)", pid, s)
	}
	waitGone(t, pid, startTime(pid))
	if exists(sock) || exists(sock+".state") {
		t.Fatal("socket or state file left after a failed start")
	}
}

// TestStopRefusal proves stop refuses (exit 1, nothing signalled) a PID
// that is not the daemon of the socket.
func TestStopRefusal(t *testing.T) {
	cfg, _ := writeConfig(t, "")
	sd := cliStart(t, cfg)
	start := startTime(sd.PID)
	defer func() {
		cli(t, "stop", "--pid", strconv.Itoa(sd.PID), "--socket", sd.Socket)
		waitGone(t, sd.PID, start)
	}()
	sleep := exec.Command("sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Skip("no sleep binary")
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	_, stderr, code := cli(t, "stop", "--pid", strconv.Itoa(sleep.Process.Pid), "--socket", sd.Socket)
	if code != 1 || !strings.Contains(stderr, "refused") {
		t.Fatalf("stop: exit %d, %q; want 1 and a refusal", code, stderr)
	}
	if procState(sleep.Process.Pid) == 'Z' || !alive(sd.PID, start) {
		t.Fatal("something was signalled")
	}
}

// runCLI starts `run` and waits until its daemon is ready (the state file
// appears); it returns the command and the daemon's PID.
func runCLI(t *testing.T, cfg, sock string) (*exec.Cmd, *bytes.Buffer, int) {
	t.Helper()
	cmd := exec.Command(binary, "run", "--config", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(generous)
	for {
		b, err := os.ReadFile(sock + ".state")
		var st struct {
			PID int `json:"pid"`
		}
		if err == nil && json.Unmarshal(b, &st) == nil && st.PID > 0 {
			return cmd, &stderr, st.PID
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("run never got ready:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits (generously) for cmd and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(generous):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("run did not exit")
		return -1
	}
}

// TestRun proves `run` in its three endings: SIGTERM or SIGINT stop the
// daemon and exit 0; a daemon that dies by itself makes run exit with its
// status (code, or 128+signal); every time the socket and state file are
// cleaned up and the daemon is gone. The daemon's output reaches run's log.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// end makes run end, given its command and the daemon's PID.
		end  func(t *testing.T, run *exec.Cmd, pid int, sock string)
		code int
	}{
		// SIGTERM to run: stop, clean up, exit 0.
		{"SIGTERM", nil, func(t *testing.T, run *exec.Cmd, pid int, sock string) {
			_ = run.Process.Signal(syscall.SIGTERM)
		}, 0},
		// SIGINT (Ctrl-C) likewise.
		{"SIGINT", nil, func(t *testing.T, run *exec.Cmd, pid int, sock string) {
			_ = run.Process.Signal(syscall.SIGINT)
		}, 0},
		// The daemon SIGKILLed behind run's back: 128 + 9.
		{"daemon killed", nil, func(t *testing.T, run *exec.Cmd, pid int, sock string) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}, 137},
		// The daemon exits by itself with status 5 (it serves one
		// connection, like virtiofsd).
		{"daemon exits 5", []string{"-fake.one-conn=5"}, func(t *testing.T, run *exec.Cmd, pid int, sock string) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, sock := writeConfig(t, "", append([]string{"-fake.after-ready=line after ready"}, tc.args...)...)
			run, stderr, pid := runCLI(t, cfg, sock)
			start := startTime(pid)
			tc.end(t, run, pid, sock)
			if code := waitExit(t, run); code != tc.code {
				t.Fatalf("run exited %d, want %d\n%s", code, tc.code, stderr.String())
			}
			if alive(pid, start) {
				t.Fatal("the daemon outlived run")
			}
			waitGone(t, pid, start)
			if exists(sock) || exists(sock+".state") {
				t.Fatal("socket or state file left behind")
			}
			if !strings.Contains(stderr.String(), "line after ready") {
				t.Fatalf("the daemon's output is not in run's log:\n%s", stderr.String())
			}
		})
	}
}

// TestRunKilled proves the daemon does not outlive a `run` that is
// SIGKILLed (no chance to clean up): it gets SIGTERM from the kernel and
// exits, eventually.
func TestRunKilled(t *testing.T) {
	cfg, sock := writeConfig(t, "")
	run, _, pid := runCLI(t, cfg, sock)
	start := startTime(pid)
	_ = run.Process.Signal(syscall.SIGKILL)
	_ = run.Wait()
	waitGone(t, pid, start) // fails if still running after a generous wait
	// The stale socket does not block the next start.
	sd := cliStart(t, cfg)
	if _, _, code := cli(t, "stop", "--pid", strconv.Itoa(sd.PID), "--socket", sd.Socket); code != 0 {
		t.Fatal("stop failed")
	}
	waitGone(t, sd.PID, startTime(sd.PID))
}

// TestDemo runs the one-command demo against the real built-in daemon.
func TestDemo(t *testing.T) {
	out, stderr, code := cli(t, "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{
		"started the built-in daemon",
		"/hello.txt (", "/notes/deep/nested.txt (", "/latest -> notes/todo.txt", "/notes/deep/up -> ../todo.txt",
		"Hello from the host!",
		"read the symlink /latest over 9P: -> notes/todo.txt",
		"This file was created and written by the 9P client.",
		"socket removed",
		"==> removed ",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	i := strings.LastIndex(out, "==> removed ")
	tmp := strings.TrimSpace(out[i+len("==> removed "):])
	if exists(tmp) {
		t.Fatalf("%s left behind", tmp)
	}
}
