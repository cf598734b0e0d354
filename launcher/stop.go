package launcher

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/socket"
)

// pollSlice is how often a wait on a pidfd looks at its context.
const pollSlice = 50 * time.Millisecond

// StopByPID stops the daemon serving socketPath whose PID a previous
// launcher reported, then removes the socket and the state file. It serves
// a process that did not start the daemon (`fsd-launcher stop`).
//
// Identity first, so a reused PID is never signalled. A pidfd is opened on
// PID before anything is checked, and every signal goes through it
// (pidfd_send_signal): if the PID is reused after the check, the pidfd
// still names the process that was checked, so there is no window between
// check and kill. The check:
//   - when StatePath(socketPath) exists, its pid must be PID, its socket
//     socketPath, and its start time that of /proc/PID/stat now;
//   - otherwise PID must hold the socket's listening descriptor
//     (socket.HeldBy).
//
// A failed check is a refusal wrapping ErrNotDaemon; nothing is signalled
// and nothing removed. PID <= 0 is ErrInvalidPID; PID 1 and the caller's own
// PID are refused.
//
// Then SIGTERM, a wait (the pidfd becomes readable when the process exits;
// a child of the caller is reaped), SIGKILL after the stop timeout or when
// ctx ends. The descendants of PID are found before the signal and stopped
// the same way once PID is gone, and so is any process still holding the
// listening socket: QEMU's virtiofsd with -o sandbox=namespace forks after
// the VMM connects, PID is the parent the launcher started (the PID it
// reports), and the child serves the connection; the child has a
// parent-death SIGTERM, but the launcher does not rely on that.
//
// A Daemon started by this process is waited for through its Daemon (whose
// goroutine reaps it, so Wait still reports how it ended). Any other child
// of the caller is reaped here: the caller must not wait for it as well.
//
// Idempotent: when PID is already gone (or a zombie), leftovers are
// cleaned: processes still holding the recorded socket, the socket when
// nothing listens on it (socket.Remove never follows a symlink and reports a
// non-socket with socket.ErrNotSocket instead of removing it), and the state
// file when it names PID; the result is nil.
func StopByPID(ctx context.Context, pid int, socketPath string, opts ...StopOption) (err error) {
	o := newStopOptions(opts)
	span := startSpan(o.tracer, "launcher.stop", opentracing.SpanFromContext(ctx))
	span.SetTag("pid", pid)
	span.SetTag("socket", socketPath)
	defer func() { finishSpan(span, err) }()

	if err := checkPID(pid); err != nil {
		return err
	}
	if socketPath, err = cleanSocketPath(socketPath); err != nil {
		return err
	}
	log := o.log.WithFields(logrus.Fields{"pid": pid, "socket": socketPath})

	st, err := ReadState(socketPath)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		st = nil
	default:
		return errors.Wrapf(ErrNotDaemon, "pid %d, socket %s: cannot use the state file (%v)", pid, socketPath, err)
	}

	v, err := openVictim(pid)
	if errors.Is(err, errNoProcess) {
		log.Info("daemon already gone; cleaning up")
		return stopLeftovers(ctx, pid, socketPath, st, o, log, span)
	}
	if err != nil {
		return err
	}
	defer v.close()
	ps, err := readProcStat(pid)
	if errors.Is(err, errNoProcess) || (err == nil && ps.State == 'Z') {
		v.reap()
		log.Info("daemon already exited; cleaning up")
		return stopLeftovers(ctx, pid, socketPath, st, o, log, span)
	}
	if err != nil {
		return err
	}

	var ino uint64
	if st != nil {
		switch {
		case st.PID != pid:
			return errors.Wrapf(ErrNotDaemon, "pid %d: state file %s names pid %d", pid, StatePath(socketPath), st.PID)
		case st.Socket != socketPath:
			return errors.Wrapf(ErrNotDaemon, "pid %d: state file %s is for socket %s", pid, StatePath(socketPath), st.Socket)
		case st.StartTime != ps.StartTime:
			return errors.Wrapf(ErrNotDaemon, "pid %d started at tick %d, the daemon of %s at tick %d: the pid was reused", pid, ps.StartTime, socketPath, st.StartTime)
		}
		ino = st.SocketInode
	} else {
		held, herr := socket.HeldBy(pid, socketPath)
		if herr != nil {
			return errors.Wrapf(ErrNotDaemon, "pid %d, socket %s: no state file, and holding the socket cannot be proven: %v", pid, socketPath, herr)
		}
		if !held {
			return errors.Wrapf(ErrNotDaemon, "pid %d does not hold the listening socket %s (and there is no state file)", pid, socketPath)
		}
		if ino, err = socket.ListenerInode(socketPath); err != nil {
			ino = 0
		}
	}
	s := &stopper{log: log, tracer: o.tracer, span: span, socket: socketPath, timeout: o.timeout}
	if err := s.terminate(ctx, v, ino); err != nil {
		return err
	}
	return removeLeftovers(socketPath, pid, log)
}

// checkPID refuses PIDs that must never be signalled.
func checkPID(pid int) error {
	switch {
	case pid <= 0:
		return errors.Wrapf(ErrInvalidPID, "pid %d", pid)
	case pid == 1:
		return errors.Wrap(ErrNotDaemon, "pid 1 is init")
	case pid == os.Getpid():
		return errors.Wrapf(ErrNotDaemon, "pid %d is this process", pid)
	}
	return nil
}

func cleanSocketPath(p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", errors.Errorf("socket path %q is not absolute", p)
	}
	return filepath.Clean(p), nil
}

// stopLeftovers cleans up after a daemon that is already gone: processes
// still holding its socket (a child that outlived it; only when the state
// file proves the socket is the daemon's), the socket and the state file.
func stopLeftovers(ctx context.Context, pid int, socketPath string, st *State, o *stopOptions, log *logrus.Entry, span opentracing.Span) error {
	if st != nil && st.PID == pid && st.Socket == socketPath && st.SocketInode != 0 {
		if cur, err := socket.ListenerInode(socketPath); err == nil && cur == st.SocketInode {
			holders := holdersOf(st.SocketInode, map[int]bool{pid: true})
			if len(holders) > 0 {
				log.WithField("holders", len(holders)).Warn("processes still hold the daemon's socket; stopping them")
			}
			err := (&stopper{log: log, tracer: o.tracer, span: span, socket: socketPath, timeout: o.timeout}).group(ctx, holders)
			closeAll(holders)
			if err != nil {
				return err
			}
		}
	}
	return removeLeftovers(socketPath, pid, log)
}

// removeLeftovers removes the socket when nothing listens on it (under
// the lock a starting launcher takes, see socket.RemoveStale), and the
// state file when it names pid.
func removeLeftovers(socketPath string, pid int, log *logrus.Entry) error {
	var errs []error
	err := socket.RemoveStale(socketPath)
	switch {
	case errors.Is(err, socket.ErrInUse):
		log.Warn("another process listens on the socket; left in place")
	case err != nil:
		errs = append(errs, err)
	}
	if err := removeStateIf(socketPath, pid); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.WithMessage(errs[0], "launcher: cleanup")
	}
	return nil
}

// stopper holds what stopping processes needs: the logger, the tracer and
// the parent span of "launcher.kill", the socket path (for span tags and
// the holder check) and the SIGTERM-to-SIGKILL timeout; with kill9, SIGKILL
// is sent at once (a start that failed).
type stopper struct {
	log     *logrus.Entry
	tracer  opentracing.Tracer
	span    opentracing.Span
	socket  string
	timeout time.Duration
	kill9   bool
}

// terminate stops main (SIGTERM, wait until the timeout or ctx, SIGKILL),
// then what outlived it: its descendants, found before the signal, and
// anyone still holding the listening socket with sockfs inode ino.
//
// The descendants matter for daemons that fork. QEMU's virtiofsd with
// -o sandbox=namespace forks once the VMM has connected: the parent (the
// PID the launcher started and reports) waits, the child serves the
// connection (it closed the listening socket after accept) and gets SIGTERM
// from the kernel when the parent dies (PR_SET_PDEATHSIG). A daemon without
// that safeguard would leave its child behind, so the launcher does not
// rely on it.
func (s *stopper) terminate(ctx context.Context, main *victim, ino uint64) error {
	var kids []*victim
	if !main.exited() {
		kids = descendantVictims(main.pid)
	}
	defer func() { closeAll(kids) }()
	if err := s.group(ctx, []*victim{main}); err != nil {
		return err
	}
	if ino != 0 {
		if cur, err := socket.ListenerInode(s.socket); err == nil && cur == ino {
			skip := map[int]bool{main.pid: true}
			for _, k := range kids {
				skip[k.pid] = true
			}
			kids = append(kids, holdersOf(ino, skip)...)
		}
	}
	if len(kids) > 0 {
		s.log.WithField("processes", len(kids)).Info("stopping processes that hold the daemon's socket")
	}
	return s.group(ctx, kids)
}

// group sends SIGTERM to every victim still running, waits until
// timeout (or ctx) for them to exit, sends SIGKILL to the rest, and reaps
// those that are the caller's children. With kill9 it sends SIGKILL at once.
func (s *stopper) group(ctx context.Context, vs []*victim) error {
	var running []*victim
	for _, v := range vs {
		if v.exited() {
			v.reap()
			continue
		}
		if s.kill9 {
			running = append(running, v)
			continue
		}
		s.log.WithField("target", v.pid).Debug("SIGTERM")
		if err := v.signal(syscall.SIGTERM); err != nil {
			return err
		}
		running = append(running, v)
	}
	deadline := time.Now().Add(s.timeout)
	var errs []error
	for _, v := range running {
		if s.kill9 || !v.waitUntil(ctx, deadline) {
			if !s.kill9 {
				s.log.WithField("target", v.pid).Warnf("still running %v after SIGTERM; SIGKILL", s.timeout)
			}
			if err := s.kill(v); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		v.reap()
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// kill sends SIGKILL in a "launcher.kill" span and waits (bounded) for the
// process to exit.
func (s *stopper) kill(v *victim) (err error) {
	span := startSpan(s.tracer, "launcher.kill", s.span)
	span.SetTag("pid", v.pid)
	span.SetTag("socket", s.socket)
	defer func() { finishSpan(span, err) }()
	if err := v.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !v.waitUntil(context.Background(), time.Now().Add(killWait)) {
		return errors.Wrapf(ErrNotStopped, "pid %d", v.pid)
	}
	return nil
}

// victim is a process to stop: one of our Daemons (signalled through its
// os.Process, which uses a pidfd, and reaped by its own goroutine) or any
// other process, held by a pidfd.
type victim struct {
	pid   int
	pidfd int // -1 when d is set
	d     *Daemon
}

// openVictim returns a handle on pid; errNoProcess when there is none.
func openVictim(pid int) (*victim, error) {
	if d := registered(pid); d != nil {
		return &victim{pid: pid, pidfd: -1, d: d}, nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errors.Wrapf(errNoProcess, "pid %d", pid)
		}
		return nil, errors.Wrapf(err, "pidfd_open(%d)", pid)
	}
	return &victim{pid: pid, pidfd: fd}, nil
}

func (v *victim) close() {
	if v.pidfd >= 0 {
		_ = unix.Close(v.pidfd)
		v.pidfd = -1
	}
}

func closeAll(vs []*victim) {
	for _, v := range vs {
		v.close()
	}
}

// signal sends sig; a process that is already gone (ESRCH) is not an error.
func (v *victim) signal(sig syscall.Signal) error {
	if v.d != nil {
		if err := v.d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return errors.Wrapf(err, "signal %v to pid %d", sig, v.pid)
		}
		return nil
	}
	if err := unix.PidfdSendSignal(v.pidfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return errors.Wrapf(err, "pidfd_send_signal(pid %d, %v)", v.pid, sig)
	}
	return nil
}

// exited reports whether the process has exited (a zombie counts).
func (v *victim) exited() bool {
	if v.d != nil {
		select {
		case <-v.d.done:
			return true
		default:
			return false
		}
	}
	return pidfdReadable(v.pidfd, 0)
}

// waitUntil waits for the process to exit until deadline or ctx ends, and
// reports whether it exited.
func (v *victim) waitUntil(ctx context.Context, deadline time.Time) bool {
	if v.d != nil {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-v.d.done:
			return true
		case <-ctx.Done():
		case <-t.C:
		}
		return v.exited()
	}
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return pidfdReadable(v.pidfd, 0)
		}
		if pidfdReadable(v.pidfd, min(left, pollSlice)) {
			return true
		}
	}
}

// reap reaps the process when it is the caller's child and no Daemon owns
// it. waitid(P_PIDFD) fails with ECHILD for anyone else's process, which is
// the expected case for `fsd-launcher stop`.
func (v *victim) reap() {
	if v.d != nil || v.pidfd < 0 {
		return
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PIDFD, v.pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// pidfdReadable polls a pidfd: it becomes readable when the process exits.
func pidfdReadable(fd int, wait time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(wait.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0
	}
}

// descendantVictims opens handles on the live descendants of pid.
func descendantVictims(pid int) []*victim {
	desc, err := descendantsOf(pid)
	if err != nil {
		return nil
	}
	var out []*victim
	for c, st := range desc {
		if v := openChecked(c, st); v != nil {
			out = append(out, v)
		}
	}
	return out
}

// holdersOf opens handles on every process (but those in skip, init and
// this process) that holds the socket with sockfs inode ino.
func holdersOf(ino uint64, skip map[int]bool) []*victim {
	pids, err := allPIDs()
	if err != nil {
		return nil
	}
	var out []*victim
	for _, p := range pids {
		if skip[p] {
			continue
		}
		st, err := readProcStat(p)
		if err != nil || !holdsInode(p, ino) {
			continue
		}
		if v := openChecked(p, st); v != nil {
			out = append(out, v)
		}
	}
	return out
}

// openChecked returns a pidfd handle on p when p is a live process (not
// init, not us) that is still the process st describes once the pidfd is
// open.
func openChecked(p int, st procStat) *victim {
	if p <= 1 || p == os.Getpid() || st.State == 'Z' {
		return nil
	}
	v, err := openVictim(p)
	if err != nil {
		return nil
	}
	if now, err := readProcStat(p); err != nil || now.StartTime != st.StartTime {
		v.close() // the PID was reused between the scan and pidfd_open
		return nil
	}
	return v
}
