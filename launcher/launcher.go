// Package launcher starts, supervises and stops a file daemon (the
// built-in fsd, or an external one such as QEMU's virtiofsd) for a VM-based
// container runtime.
//
// Start pre-opens the daemon's unix socket (package socket), hands it to the
// daemon as fd 3, waits for the daemon's readiness line on its stderr
// (package readiness) and records the daemon's identity in a state file
// next to the socket. Stop ends a daemon this process started; StopByPID and
// Status serve a later process that knows only the PID and the socket path,
// and prove from the state file (PID + /proc start time) that the PID is
// still the daemon before they signal it, so a reused PID is never killed.
//
// Every process the launcher starts is reaped by one goroutine that owns
// cmd.Wait; on any failure after the start the daemon is killed, reaped and
// its socket removed before Start returns.
package launcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/opentracing/opentracing-go"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/readiness"
	"github.com/fsd-launcher/fsd-launcher/socket"
)

// fsdReadyLine is fsd.ReadyLine, the text the built-in daemon prints on
// stderr when it accepts connections.
const fsdReadyLine = "fsd: ready"

// A StartError carries the daemon's last tailLines output lines and, when
// there were more, its first headLines: a daemon that dies at once often
// says why first and then prints a long usage text.
const (
	tailLines = 20
	headLines = 5
)

// outputGrace is how long the launcher keeps reading the daemon's output
// after the daemon was reaped: output still in the pipe is read at once, so
// this only matters when a descendant of the daemon keeps the pipe open.
const outputGrace = time.Second

// killWait bounds the wait for a process to disappear after SIGKILL (a
// process in uninterruptible sleep can take long; it is still reaped by
// its Daemon's goroutine later).
const killWait = 30 * time.Second

// Sentinel errors; check them with errors.Is.
var (
	// ErrNotDaemon is the refusal of StopByPID (and the identity failure of
	// Status): the PID is not provably the daemon serving the socket, so
	// nothing was signalled.
	ErrNotDaemon = errors.New("pid is not the daemon serving the socket")
	// ErrInvalidPID is returned for a PID <= 0; it is never signalled.
	ErrInvalidPID = errors.New("invalid pid")
	// ErrNotStopped is returned when a process did not disappear even after
	// SIGKILL within the launcher's bound.
	ErrNotStopped = errors.New("process did not exit after SIGKILL")
)

// ExitError is how a daemon ended, when that was not exit status 0.
type ExitError struct {
	// Code is the exit status, or -1 when a signal ended the process.
	Code int
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal
}

// Error implements error.
func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return "daemon killed by signal " + strconv.Itoa(int(e.Signal)) + " (" + e.Signal.String() + ")"
	}
	return "daemon exited with status " + strconv.Itoa(e.Code)
}

// ExitCode returns the status a shell would report: Code, or 128+Signal.
func (e *ExitError) ExitCode() int {
	if e.Signal != 0 {
		return 128 + int(e.Signal)
	}
	return e.Code
}

// StartError reports a daemon that was started but did not become ready.
// By the time Start returns it, the daemon has been killed (unless it had
// exited by itself), reaped, and its socket and state file removed.
type StartError struct {
	// Path is the daemon binary and PID its process.
	Path string
	PID  int
	// Err is the reason: a *readiness.NotReadyError wrapping
	// readiness.ErrTimeout, ErrExited, ErrStreamClosed or the context's
	// error, or the failure to write the state file.
	Err error
	// Exit is how the daemon ended when it exited by itself with a non-zero
	// status or by a signal it was not sent by the launcher; nil otherwise.
	Exit *ExitError
	// Output holds the daemon's output (stdout and stderr): its last lines
	// and, when there were more, its first few, with a "[... N lines
	// omitted ...]" line between them.
	Output []string
}

// maxShownLine bounds each output line Error shows (Output keeps them
// whole).
const maxShownLine = 512

// Error implements error: the reason, the exit status and the last lines.
func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "daemon %s (pid %d) did not become ready: ", e.Path, e.PID)
	var nr *readiness.NotReadyError
	if errors.As(e.Err, &nr) {
		fmt.Fprintf(&b, "%v (after %v)", nr.Reason, nr.Waited.Round(time.Millisecond))
	} else {
		b.WriteString(e.Err.Error())
	}
	if e.Exit != nil {
		b.WriteString("; " + e.Exit.Error())
	}
	if len(e.Output) == 0 {
		b.WriteString("; no output")
		return b.String()
	}
	b.WriteString("; output:")
	for _, l := range e.Output {
		if len(l) > maxShownLine {
			n := maxShownLine
			for n > 0 && !utf8.RuneStart(l[n]) {
				n--
			}
			l = l[:n] + "... (truncated)"
		}
		b.WriteString("\n    " + l)
	}
	return b.String()
}

// Unwrap returns the reason and, when set, the exit error, for errors.Is
// and errors.As.
func (e *StartError) Unwrap() []error {
	if e.Exit != nil {
		return []error{e.Err, e.Exit}
	}
	return []error{e.Err}
}

var (
	_ error = (*ExitError)(nil)
	_ error = (*StartError)(nil)
)

// Daemon is a daemon started by Start. Its methods are safe for concurrent
// use.
type Daemon struct {
	cfg      config.Config
	path     string
	builtin  bool
	detached bool
	log      *logrus.Entry
	tracer   opentracing.Tracer

	cmd       *exec.Cmd
	pid       int
	startTime uint64
	sockInode uint64 // sockfs inode of the listening socket
	sockFile  fileID // the socket file, so cleanup never removes another's

	done    chan struct{} // closed when cmd.Wait returned (child reaped)
	waitErr error         // written before done is closed

	outputDone chan struct{} // closed when the daemon's output is fully read

	stopMu sync.Mutex
}

// PID returns the daemon's process ID: the process the launcher started
// and that received the socket (for a daemon that forks, its parent; see
// Stop).
func (d *Daemon) PID() int { return d.pid }

// SocketPath returns the socket the daemon serves.
func (d *Daemon) SocketPath() string { return d.cfg.SocketPath }

// Done returns a channel closed once the daemon has exited and been reaped.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Wait waits for the daemon to exit and returns nil for exit status 0, an
// *ExitError for any other status or a signal (including the SIGTERM of
// Stop), or the wait error.
func (d *Daemon) Wait() error {
	<-d.done
	return d.waitErr
}

// registry maps the PIDs of this process's live daemons to their Daemon,
// so StopByPID in the same process waits through the Daemon (whose
// goroutine owns cmd.Wait) instead of reaping the child itself.
var registry = struct {
	sync.Mutex
	m map[int]*Daemon
}{m: map[int]*Daemon{}}

func register(d *Daemon) {
	registry.Lock()
	registry.m[d.pid] = d
	registry.Unlock()
}

func unregister(d *Daemon) {
	registry.Lock()
	if registry.m[d.pid] == d {
		delete(registry.m, d.pid)
	}
	registry.Unlock()
}

func registered(pid int) *Daemon {
	registry.Lock()
	defer registry.Unlock()
	return registry.m[pid]
}

// Start validates cfg, pre-opens its socket, starts the daemon with the
// socket as fd 3, and waits up to cfg.ReadyTimeout (or ctx) for the
// daemon's readiness line. On success it writes the state file
// StatePath(cfg.SocketPath) and returns the running daemon.
//
// The daemon inherits fds 0-2 (stdin from /dev/null; stdout and stderr to
// the launcher, or to the log file when Detached) and fd 3, nothing else.
// Start first marks every descriptor >= 3 of the calling process
// close-on-exec, as runc does, because exec.Cmd leaves a descriptor without
// that flag (inherited by the launcher, or opened by a careless library)
// open in the child; code of the caller that relies on such a descriptor
// surviving its own exec must pass it in ExtraFiles instead.
//
// An external daemon always gets fd 3, even when its args have no {fd}
// placeholder (e.g. it is told --socket-path): an unused inherited
// descriptor is harmless, and the socket file keeps its mode.
//
// When the daemon is not ready (timeout, early exit, closed stderr,
// cancelled ctx) it is killed with SIGKILL and reaped, the socket and state
// file are removed, and the error is a *StartError with the reason and the
// daemon's last output lines. Errors before the daemon starts name the
// configuration key (config.ErrInvalid), the socket (socket.ErrInUse,
// socket.ErrNotSocket) or the binary.
func Start(ctx context.Context, cfg *config.Config, opts ...Option) (_ *Daemon, err error) {
	o := newOptions(opts)
	span := startSpan(o.tracer, "launcher.start", opentracing.SpanFromContext(ctx))
	defer func() { finishSpan(span, err) }()

	if cfg == nil {
		return nil, errors.New("launcher: no configuration")
	}
	if err := ctx.Err(); err != nil {
		return nil, errors.Wrap(err, "launcher: start")
	}
	if err := cfg.Validate(); err != nil {
		return nil, errors.WithMessage(err, "launcher")
	}
	c := *cfg
	applyDefaults(&c)
	span.SetTag("socket", c.SocketPath)
	path, args, readyLine, err := daemonCommand(&c, o)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:        c,
		path:       path,
		builtin:    c.IsBuiltinDaemon(),
		detached:   o.detached,
		log:        o.log.WithField("socket", c.SocketPath),
		tracer:     o.tracer,
		done:       make(chan struct{}),
		outputDone: make(chan struct{}),
	}

	// The socket, owned by the launcher until the daemon has its copy.
	l, err := socket.Listen(c.SocketPath, c.SocketMode.Perm())
	if err != nil {
		return nil, errors.WithMessage(err, "launcher: listen")
	}
	started := false
	defer func() {
		if err != nil && !started {
			_ = socket.Remove(c.SocketPath)
		}
	}()
	lf, err := socket.ListenerFile(l)
	_ = l.Close() // the socket file stays (Listen sets SetUnlinkOnClose(false))
	if err != nil {
		return nil, errors.WithMessage(err, "launcher")
	}
	defer func() { _ = lf.Close() }() // closed right after the start below; again here is a no-op
	if d.sockInode, err = socket.ListenerInode(c.SocketPath); err != nil {
		return nil, errors.WithMessage(err, "launcher")
	}
	if d.sockFile, err = lstatID(c.SocketPath); err != nil {
		return nil, errors.WithMessage(err, "launcher")
	}

	// Where the daemon's stdout and stderr go.
	out, err := newOutput(&c, o.detached)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && !started {
			out.abort()
		}
	}()

	if err := closeExecFrom(3); err != nil {
		return nil, errors.WithMessage(err, "launcher: mark descriptors close-on-exec")
	}
	cmd, err := startDaemonCmd(&c, d.log, func() *exec.Cmd {
		cmd := exec.Command(path, args...)
		cmd.Stdout = out.w
		cmd.Stderr = out.w
		cmd.ExtraFiles = []*os.File{lf} // fd 3
		if o.detached {
			cmd.Dir = "/" // do not pin the launcher's working directory
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		} else {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		}
		return cmd
	})
	// The parent's copies of the socket and of the output's write end: the
	// daemon holds its own now.
	_ = lf.Close()
	_ = out.w.Close()
	if err != nil {
		return nil, err
	}
	started = true
	d.cmd = cmd
	d.pid = cmd.Process.Pid
	span.SetTag("pid", d.pid)
	d.log = d.log.WithField("pid", d.pid)
	// The child is not reaped before the goroutine below starts, so the PID
	// still names it here.
	if ps, perr := readProcStat(d.pid); perr == nil {
		d.startTime = ps.StartTime
	} else {
		err = perr
	}
	register(d)
	go d.reap()
	d.log.WithField("args", args).Debugf("started %s", path)

	w := out.watch(d, readyLine, o.poll)
	if err == nil {
		rspan := startSpan(o.tracer, "launcher.ready", span)
		rspan.SetTag("pid", d.pid)
		rspan.SetTag("socket", c.SocketPath)
		err = readiness.Wait(ctx, w, d.done, c.ReadyTimeout.D())
		finishSpan(rspan, err)
	}
	if err == nil {
		err = writeState(&State{
			PID:             d.pid,
			StartTime:       d.startTime,
			Socket:          c.SocketPath,
			SocketInode:     d.sockInode,
			Daemon:          path,
			Builtin:         d.builtin,
			LauncherVersion: o.version,
			StartedAt:       time.Now().UTC(),
		})
	}
	if err != nil {
		return nil, d.abortStart(err, span, out, w)
	}
	out.ready(d, w)
	d.log.Info("daemon ready")
	return d, nil
}

// abortStart kills (SIGKILL) and reaps a daemon that did not become ready,
// and whatever it forked that would outlive it (see stopper.terminate),
// collects its output, removes the socket and state file, and builds the
// *StartError.
func (d *Daemon) abortStart(reason error, span opentracing.Span, out *output, w *readiness.Watcher) error {
	byItself := false
	select {
	case <-d.done:
		byItself = true
	default:
	}
	s := &stopper{log: d.log, tracer: d.tracer, span: span, socket: d.cfg.SocketPath, kill9: true}
	if err := s.terminate(context.Background(), &victim{pid: d.pid, pidfd: -1, d: d}, d.sockInode); err != nil {
		d.log.WithError(err).Error("killing the daemon that did not become ready")
	}
	output := out.lines(d, w)
	if err := d.cleanup(); err != nil {
		d.log.WithError(err).Warn("cleanup after a failed start")
	}
	se := &StartError{Path: d.path, PID: d.pid, Err: reason, Output: output}
	if byItself {
		errors.As(d.waitErr, &se.Exit)
	}
	d.log.WithError(se).Debug("daemon did not become ready") // returned, so not logged louder
	return se
}

// reap owns cmd.Wait: it is the only caller, so the child is reaped exactly
// once and every waiter selects on d.done.
func (d *Daemon) reap() {
	err := d.cmd.Wait()
	d.waitErr = exitError(err)
	unregister(d)
	close(d.done)
	d.log.WithError(d.waitErr).Debug("daemon reaped")
}

// exitError turns cmd.Wait's error into nil, an *ExitError, or a wrapped
// wait error.
func exitError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				return &ExitError{Code: -1, Signal: ws.Signal()}
			}
			return &ExitError{Code: ws.ExitStatus()}
		}
		return &ExitError{Code: ee.ExitCode()}
	}
	return errors.Wrap(err, "wait for daemon")
}

// Stop stops the daemon: SIGTERM, a wait of up to the configuration's
// stop_timeout (less if ctx ends first), then SIGKILL; the process is
// reaped. A daemon that forked (virtiofsd with -o sandbox=namespace) is
// handled too: its descendants, and any process still holding the
// listening socket, are stopped the same way once the daemon is gone. Then the socket (when the file at the
// path is still the one Start bound) and the state file are removed.
//
// The way the daemon ended is Wait's business, not Stop's: an exit caused
// by the SIGTERM (by the signal, or a non-zero status such as virtiofsd's
// 1) is not an error, nor is a daemon that had already exited. Stop is
// idempotent and safe to call concurrently.
func (d *Daemon) Stop(ctx context.Context) (err error) {
	span := startSpan(d.tracer, "launcher.stop", opentracing.SpanFromContext(ctx))
	span.SetTag("pid", d.pid)
	span.SetTag("socket", d.cfg.SocketPath)
	defer func() { finishSpan(span, err) }()
	d.stopMu.Lock()
	defer d.stopMu.Unlock()

	s := &stopper{log: d.log, tracer: d.tracer, span: span, socket: d.cfg.SocketPath, timeout: d.cfg.StopTimeout.D()}
	if err := s.terminate(ctx, &victim{pid: d.pid, pidfd: -1, d: d}, d.sockInode); err != nil {
		return err
	}
	if !d.detached {
		<-d.outputDone
	}
	return d.cleanup()
}

// cleanup removes the socket, when the file at the path is still the one
// Start bound, and the state file, when it names this daemon.
func (d *Daemon) cleanup() error {
	if d.cfg.SocketPath == "" {
		return nil // a gofer (StartGofer) has neither
	}
	var errs []error
	if id, err := lstatID(d.cfg.SocketPath); err == nil && id == d.sockFile {
		if err := socket.Remove(d.cfg.SocketPath); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeStateIf(d.cfg.SocketPath, d.pid); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.WithMessage(errs[0], "launcher: cleanup")
	}
	return nil
}

// applyDefaults fills what a Config built by hand (not by config.Parse)
// may leave zero.
func applyDefaults(c *config.Config) {
	if c.SocketMode == 0 {
		c.SocketMode = config.DefaultSocketMode
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = config.Duration(config.DefaultReadyTimeout)
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = config.Duration(config.DefaultStopTimeout)
	}
	if c.Log.Level == "" {
		c.Log.Level = config.DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = config.DefaultLogFormat
	}
}

// daemonCommand returns the binary, its arguments and the readiness line.
func daemonCommand(c *config.Config, o *options) (path string, args []string, readyLine string, err error) {
	if !c.IsBuiltinDaemon() {
		args, err := c.Expand(3)
		if err != nil {
			return "", nil, "", errors.WithMessage(err, "launcher")
		}
		return c.Daemon.Path, args, c.Daemon.ReadyLine, nil
	}
	path = o.executable
	if path == "" {
		if path, err = os.Executable(); err != nil {
			return "", nil, "", errors.Wrap(err, "launcher: find the built-in daemon (os.Executable)")
		}
	}
	args, err = ServeArgs(c)
	if err != nil {
		return "", nil, "", err
	}
	readyLine = c.Daemon.ReadyLine
	if readyLine == "" {
		readyLine = fsdReadyLine
	}
	return path, args, readyLine, nil
}

// ServeArgs returns the argument list the launcher gives the built-in
// daemon (see WithExecutable), daemon.args last. A mount source holding
// ',' cannot be written in the --mount syntax and is refused.
func ServeArgs(c *config.Config) ([]string, error) {
	level, format := c.Log.Level, c.Log.Format
	if level == "" {
		level = config.DefaultLogLevel
	}
	if format == "" {
		format = config.DefaultLogFormat
	}
	args := []string{"serve", "--fd", "3", "--shared-dir", c.SharedDir}
	if c.ReadOnly {
		args = append(args, "--readonly")
	}
	if c.NoSetuid {
		args = append(args, "--no-setuid")
	}
	for i, m := range c.Mounts {
		if strings.ContainsRune(m.Source, ',') {
			return nil, errors.Wrapf(config.ErrInvalid, "launcher: mount[%d].source %q: the built-in daemon's --mount flag cannot carry a ','", i, m.Source)
		}
		v := "tag=" + m.Tag + ",source=" + m.Source
		if m.ReadOnly {
			v += ",ro"
		}
		if m.Share != "" {
			v += ",share=" + m.Share
		}
		args = append(args, "--mount", v)
	}
	args = append(args, "--log-level", level, "--log-format", format)
	if c.Sandbox != "" {
		args = append(args, "--sandbox", c.Sandbox)
	}
	if c.BusyPoll != nil {
		args = append(args, "--busy-poll", c.BusyPoll.String())
	}
	for _, l := range []struct {
		flag string
		v    uint64
	}{
		{"--max-connections", uint64(max(c.Limits.MaxConnections, 0))},
		{"--max-fids", uint64(max(c.Limits.MaxFids, 0))},
		{"--max-inflight", uint64(max(c.Limits.MaxInflight, 0))},
		{"--max-msize", uint64(c.Limits.MaxMsize)},
	} {
		if l.v > 0 {
			args = append(args, l.flag, strconv.FormatUint(l.v, 10))
		}
	}
	return append(args, c.Daemon.Args...), nil
}

// output is where the daemon's stdout and stderr go: a pipe read by the
// launcher (attached), or the log file (detached).
type output struct {
	w *os.File // the daemon's stdout and stderr; the parent closes it after the start

	// attached
	r    *os.File  // the pipe's read end
	seen *headTail // its first and last lines

	// detached
	logPath      string
	logR         *os.File // the log file, opened at its end before the start
	offset       int64    // where this run's output begins
	cancelFollow context.CancelFunc
}

func newOutput(c *config.Config, detached bool) (*output, error) {
	if !detached {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, errors.Wrap(err, "launcher: pipe for the daemon's output")
		}
		return &output{r: r, w: w, seen: newHeadTail()}, nil
	}
	p := c.LogFilePath()
	// O_NONBLOCK: a FIFO at the path must not hang the open; anything but a
	// regular file is refused below.
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, errors.Wrapf(err, "launcher: open log file")
	}
	if fi, err := w.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = w.Close()
		if err == nil {
			err = errors.Errorf("it is not a regular file (%v)", fi.Mode().Type())
		}
		return nil, errors.Wrapf(err, "launcher: log file %s", p)
	}
	r, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		_ = w.Close()
		return nil, errors.Wrapf(err, "launcher: open log file")
	}
	off, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		_ = w.Close()
		_ = r.Close()
		return nil, errors.Wrapf(err, "launcher: seek to the end of log file %s", p)
	}
	return &output{w: w, logPath: p, logR: r, offset: off}, nil
}

// abort releases everything when the daemon never started.
func (o *output) abort() {
	_ = o.w.Close()
	if o.r != nil {
		_ = o.r.Close()
	}
	if o.logR != nil {
		_ = o.logR.Close()
	}
}

// watch starts reading the daemon's output for readyLine. Attached, every
// line goes to the logger at info level, before and after readiness, and a
// goroutine closes the pipe once the output ends (or, after the daemon was
// reaped, once outputGrace passed). Detached, the log file is followed
// from the offset taken before the start.
func (o *output) watch(d *Daemon, readyLine string, poll time.Duration) *readiness.Watcher {
	dl := d.log.WithField("daemon", d.pid)
	if o.logR != nil {
		ctx, cancel := context.WithCancel(context.Background())
		o.cancelFollow = cancel
		// d.done closes when the daemon was reaped: the follower then
		// reads to the end of the file and stops, so a daemon that exits
		// before it is ready is reported with its last lines at once.
		return readiness.Watch(readiness.FollowUntil(ctx, o.logR, poll, d.done), readyLine,
			readiness.WithTailLines(tailLines),
			readiness.WithSink(func(line string) { dl.Debug(line) }))
	}
	w := readiness.Watch(o.r, readyLine,
		readiness.WithTailLines(tailLines),
		readiness.WithSink(func(line string) {
			o.seen.add(line)
			dl.Info(line)
		}))
	go func() {
		defer close(d.outputDone)
		select {
		case <-w.Done():
		case <-d.done:
			t := time.NewTimer(outputGrace)
			select {
			case <-w.Done():
			case <-t.C:
			}
			t.Stop()
		}
		_ = o.r.Close() // unblocks the watcher if a descendant holds the pipe
		<-w.Done()
	}()
	return w
}

// stopFollowing ends the detached watcher and closes the log file.
func (o *output) stopFollowing(w *readiness.Watcher) {
	o.cancelFollow()
	<-w.Done()
	_ = o.logR.Close()
}

// ready is called once the daemon is ready. Attached output keeps flowing
// to the logger; the detached launcher stops reading the log file.
func (o *output) ready(d *Daemon, w *readiness.Watcher) {
	if o.logR != nil {
		o.stopFollowing(w)
		close(d.outputDone)
	}
}

// lines returns the daemon's first and last output lines once it was
// reaped (see headTail).
func (o *output) lines(d *Daemon, w *readiness.Watcher) []string {
	if o.logR == nil {
		<-d.outputDone
		return o.seen.get()
	}
	o.stopFollowing(w)
	close(d.outputDone)
	// The follower stopped where it was (it may not have read the last
	// lines yet): take them from the file itself.
	lines, err := fileLines(o.logPath, o.offset)
	if err != nil {
		return w.Tail()
	}
	return lines
}

// headTail keeps the first headLines and the last tailLines lines of an
// output, in bounded memory. It is safe for concurrent use.
type headTail struct {
	mu      sync.Mutex
	head    []string
	tail    *readiness.Tail
	n       int  // lines added
	skipped bool // lines were left out before the tail (fileLines)
	full    bool // the head takes no more lines
}

func newHeadTail() *headTail { return &headTail{tail: readiness.NewTail(tailLines)} }

func (h *headTail) add(line string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full && len(h.head) < headLines {
		h.head = append(h.head, line)
	}
	h.tail.Add(line)
	h.n++
}

// get returns the last lines, preceded by the first ones (without repeating
// a line) and an "omitted" marker when there were more.
func (h *headTail) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	tail := h.tail.Lines()
	if h.n <= tailLines && !h.skipped {
		return tail
	}
	head := h.head
	if !h.skipped {
		head = head[:min(len(head), h.n-tailLines)] // the rest is in the tail
	}
	out := append([]string(nil), head...)
	if omitted := h.n - len(head) - len(tail); omitted > 0 || h.skipped {
		if h.skipped {
			out = append(out, "[... lines omitted ...]")
		} else {
			out = append(out, "[... "+strconv.Itoa(omitted)+" lines omitted ...]")
		}
	}
	return append(out, tail...)
}

// maxTailRead bounds how much of the log file fileLines reads for the tail.
const maxTailRead = 1 << 20

// fileLines returns the first and last lines (see headTail) of the file at
// p from offset on, reading the first headLines lines and at most the last
// maxTailRead bytes.
func fileLines(p string, offset int64) ([]string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "open log file")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, errors.Wrapf(err, "stat log file %s", p)
	}
	if fi.Size() < offset {
		offset = 0 // truncated (rotated) since the start
	}
	h := newHeadTail()
	read := func(r io.Reader, skipFirst bool, limit int) error {
		lr := readiness.NewLineReader(r, readiness.DefaultMaxLine)
		for i := 0; limit < 0 || i < limit; i++ {
			line, _, err := lr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return errors.Wrapf(err, "read log file %s", p)
			}
			if skipFirst && i == 0 {
				continue // a partial line: the read began inside it
			}
			h.add(line)
		}
		return nil
	}
	if fi.Size()-offset <= maxTailRead {
		_, err := f.Seek(offset, io.SeekStart)
		if err == nil {
			err = read(f, false, -1)
		}
		return h.get(), errors.Wrapf(err, "log file %s", p)
	}
	// Too much to read it all: the first lines, then the last megabyte.
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, errors.Wrapf(err, "seek log file %s", p)
	}
	if err := read(io.LimitReader(f, headLines*int64(readiness.DefaultMaxLine+1)), false, headLines); err != nil {
		return nil, err
	}
	h.tail = readiness.NewTail(tailLines) // the head lines are not the tail
	h.skipped, h.full = true, true
	if _, err := f.Seek(fi.Size()-maxTailRead, io.SeekStart); err != nil {
		return nil, errors.Wrapf(err, "seek log file %s", p)
	}
	if err := read(f, true, -1); err != nil {
		return nil, err
	}
	return h.get(), nil
}
