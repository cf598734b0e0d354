package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
)

// ErrNotReady is returned when a server did not come up in time.
var ErrNotReady = errors.New("server not ready")

// startTimeout bounds a server's start, stopTimeout its stop after SIGTERM.
const (
	startTimeout = 20 * time.Second
	stopTimeout  = 5 * time.Second
)

// endpoint is a running server the harness talks to.
type endpoint struct {
	socket string
	aname  string
	msize  uint32 // asked for; negotiate replaces it with what is granted
	pid    int
	stop   func() error
	// died returns nil while the server runs, else how it ended.
	died func() error
}

// labels are the names the report shows.
var labels = map[string]string{
	TFsd:       "fsd",
	TFsdNoPoll: "fsd, busy_poll off",
	TDiod:      "diod",
	TP9Localfs: "p9-localfs (reference)",
	THost:      "host (ceiling)",
	TEcho:      "echo (floor)",
	TFsdProf:   "fsd in-process (profiling)",
}

// proc is a server process the harness started; one goroutine owns Wait.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's, once done is closed
	log  string
}

// startProc starts cmd pinned to cpu with stdout and stderr to logPath.
func startProc(cmd *exec.Cmd, cpu int, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, errors.Wrapf(err, "create %s", logPath)
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	// Every server gets its own session, as fsd does when the launcher
	// detaches it: with autogroup scheduling (sched_autogroup_enabled) a
	// session is a scheduling group, and servers must be scheduled alike.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	if err := startPinned(cmd, cpu); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// ErrDied is returned for a server that ended while the harness used it.
var ErrDied = errors.New("server died")

// died returns nil while the process runs, else how it ended with the end
// of its log.
func (p *proc) died() error {
	select {
	case <-p.done:
		return errors.Wrapf(ErrDied, "%s: %v (log %s: %s)", filepath.Base(p.cmd.Path), p.err, p.log, tail(p.log))
	default:
		return nil
	}
}

// stop sends SIGTERM, waits stopTimeout, then SIGKILLs; it always reaps.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Wrapf(err, "SIGTERM pid %d", p.cmd.Process.Pid)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Wrapf(err, "SIGKILL pid %d", p.cmd.Process.Pid)
	}
	<-p.done
	return nil
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	return s
}

// listenFile creates a listening unix socket at path and returns it as a
// file for a child's ExtraFiles (the caller closes it after the start).
func listenFile(path string) (*os.File, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, errors.Wrapf(err, "listen %s", path)
	}
	l.SetUnlinkOnClose(false) // the child serves the path after we close ours
	f, err := l.File()
	l.Close()
	if err != nil {
		os.Remove(path)
		return nil, errors.Wrapf(err, "listener file %s", path)
	}
	return f, nil
}

// startSelf starts this executable in a server role (see MaybeServe).
func (h *Harness) startSelf(name, role string, env ...string) (*endpoint, error) {
	sock := filepath.Join(h.run, name+".sock")
	lf, err := listenFile(sock)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	exe, err := os.Executable()
	if err != nil {
		os.Remove(sock)
		return nil, errors.Wrap(err, "find own executable")
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), append([]string{envRole + "=" + role}, env...)...)
	cmd.ExtraFiles = []*os.File{lf} // fd 3 = listenerFD
	p, err := startProc(cmd, h.p.ServerCPU, filepath.Join(h.run, name+".log"))
	if err != nil {
		os.Remove(sock)
		return nil, err
	}
	return &endpoint{socket: sock, msize: h.p.Msize, pid: cmd.Process.Pid, stop: func() error {
		err := p.stop()
		os.Remove(sock)
		return err
	}, died: p.died}, nil
}

// startFsdProf starts bench/cmd/fsdprof (fsd/server over fsd/hostfs under
// the Go profiler) on a pre-opened socket.
func (h *Harness) startFsdProf() (*endpoint, error) {
	if h.fsdprof == "" {
		return nil, errors.New("no fsdprof binary (WithFsdProf)")
	}
	sock := filepath.Join(h.run, TFsdProf+".sock")
	lf, err := listenFile(sock)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(h.fsdprof, "-dir", h.export, "-out", h.profileDir, "-max-msize", strconv.Itoa(int(h.p.Msize)))
	cmd.ExtraFiles = []*os.File{lf}
	p, err := startProc(cmd, h.p.ServerCPU, filepath.Join(h.run, TFsdProf+".log"))
	if err != nil {
		os.Remove(sock)
		return nil, err
	}
	return &endpoint{socket: sock, msize: h.p.Msize, pid: cmd.Process.Pid, stop: func() error {
		err := p.stop()
		os.Remove(sock)
		return err
	}, died: p.died}, nil
}

// readProfileStats reads the stats.json fsdprof wrote when it stopped.
func (h *Harness) readProfileStats() (*ProfileStats, error) {
	path := filepath.Join(h.profileDir, "stats.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", path)
	}
	ps := &ProfileStats{Dir: h.profileDir}
	return ps, errors.Wrapf(json.Unmarshal(b, ps), "decode %s", path)
}

// startDiod starts Debian's diod on a socket path, exporting the export
// directory (aname = its path), from a scratch working directory (it may
// dump core there; the harness's own RLIMIT_CORE of 0 is inherited).
func (h *Harness) startDiod(ctx context.Context) (*endpoint, error) {
	bin, err := exec.LookPath(h.diod)
	if err != nil {
		return nil, errors.Wrapf(err, "find diod (%s)", h.diod)
	}
	sock := filepath.Join(h.run, "diod.sock")
	cwd := filepath.Join(h.run, "diod-cwd")
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return nil, errors.Wrapf(err, "mkdir %s", cwd)
	}
	cmd := exec.Command(bin, "-f", "-n", "-l", sock, "-e", h.export, "-L", "stderr")
	cmd.Dir = cwd
	p, err := startProc(cmd, h.p.ServerCPU, filepath.Join(h.run, "diod.log"))
	if err != nil {
		return nil, err
	}
	ep := &endpoint{socket: sock, aname: h.export, msize: h.p.Msize, pid: cmd.Process.Pid, stop: func() error {
		err := p.stop()
		os.Remove(sock)
		return err
	}, died: p.died}
	// diod creates the socket itself: wait for it to answer.
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return ep, nil
		}
		if perr := p.died(); perr != nil {
			return nil, errors.Wrap(ErrNotReady, perr.Error())
		}
		select {
		case <-wctx.Done():
			_ = ep.stop()
			return nil, errors.Wrapf(ErrNotReady, "diod on %s: %v", sock, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fsdConfig writes the launcher configuration NAME.toml for a daemon on
// NAME.sock, logging to NAME.log, all in the run directory; extra is more
// top-level keys.
func (h *Harness) fsdConfig(name, extra string) (string, error) {
	path := filepath.Join(h.run, name+".toml")
	cfg := fmt.Sprintf("socket_path = %q\nshared_dir = %q\nready_timeout = \"10s\"\nstop_timeout = \"5s\"\nlog_file = %q\n",
		filepath.Join(h.run, name+".sock"), h.export, filepath.Join(h.run, name+".log"))
	if h.fsdSandbox != "" {
		cfg += fmt.Sprintf("sandbox = %q\n", h.fsdSandbox)
	}
	cfg += extra
	cfg += "\n[log]\nlevel = \"error\"\n"
	return path, errors.Wrapf(os.WriteFile(path, []byte(cfg), 0o600), "write %s", path)
}

// startReply is `fsd-launcher start`'s JSON line.
type startReply struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
}

// launcherStart runs `fsd-launcher start --config cfg` with the launcher
// (and so the daemon it forks) pinned to cpu, and returns the daemon and
// the time from exec to the JSON line.
func (h *Harness) launcherStart(ctx context.Context, cfg string, cpu int) (startReply, time.Duration, error) {
	var rep startReply
	cctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, h.launcher, "start", "--config", cfg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// The daemon must not keep our pipes open; if it does, Wait must not
	// wait for it to exit.
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return rep, 0, errors.Wrap(err, "stdout pipe")
	}
	t0 := time.Now()
	if err := startPinned(cmd, cpu); err != nil {
		return rep, 0, err
	}
	line, rerr := bufio.NewReader(out).ReadBytes('\n')
	elapsed := time.Since(t0)
	werr := cmd.Wait()
	if rerr != nil || werr != nil {
		return rep, 0, errors.Errorf("%s start --config %s: %v %v: %s", h.launcher, cfg, werr, rerr, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(line, &rep); err != nil || rep.PID <= 0 || rep.Socket == "" {
		return rep, 0, errors.Errorf("%s start: unexpected output %q (%v)", h.launcher, line, err)
	}
	return rep, elapsed, nil
}

// launcherStop runs `fsd-launcher stop --pid N --socket P` and times it.
func (h *Harness) launcherStop(ctx context.Context, rep startReply) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, h.launcher, "stop", "--pid", strconv.Itoa(rep.PID), "--socket", rep.Socket)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(t0)
	if err != nil {
		return 0, errors.Wrapf(err, "%s stop --pid %d: %s", h.launcher, rep.PID, strings.TrimSpace(string(out)))
	}
	return elapsed, nil
}

// startFsd starts fsd through the launcher, as a runtime would.
func (h *Harness) startFsd(ctx context.Context, name, extra string) (*endpoint, error) {
	if _, err := os.Stat(h.launcher); err != nil {
		return nil, errors.Wrapf(err, "launcher %s (build it: make build)", h.launcher)
	}
	cfg, err := h.fsdConfig(name, extra)
	if err != nil {
		return nil, err
	}
	rep, _, err := h.launcherStart(ctx, cfg, h.p.ServerCPU)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(h.run, name+".log")
	return &endpoint{socket: rep.Socket, msize: h.p.Msize, pid: rep.PID, stop: func() error {
		_, err := h.launcherStop(context.Background(), rep)
		return err
	}, died: func() error {
		// Not our child (the launcher detached it): gone or a zombie is dead.
		if st, err := procStatusField(rep.PID, "State"); err != nil || strings.HasPrefix(st, "Z") {
			return errors.Errorf("fsd pid %d is gone (log %s: %s)", rep.PID, logPath, tail(logPath))
		}
		return nil
	}}, nil
}
