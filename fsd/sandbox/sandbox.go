// Package sandbox confines fsd, the 9P file daemon, before it serves an
// untrusted guest: defence in depth behind hostfs's own checks, in the way
// gVisor's gofer confines itself.
//
// When the daemon runs as root, Prepare and then Apply, in this order:
//
//   - "namespace" mode (Prepare), in a mount namespace of the daemon's own:
//     make every mount a slave (host mounts still propagate in, nothing
//     propagates out), bind-mount the root export onto itself (nosuid,
//     nodev, and read-only when the export is), detach a procfs mounted
//     inside it, and mount a fresh procfs over /proc (see mountProc): the
//     /proc/self/fd handle hostfs opens next comes from it;
//   - set umask 0 (the guest's modes are applied exactly) and raise
//     RLIMIT_NOFILE to what the fid cap needs;
//   - "namespace" mode: pivot into the bind mount and detach the old root,
//     so "/" is the export and /proc is gone; "chroot" mode: chroot into
//     the export; either way the working directory is "/";
//   - drop the supplementary groups;
//   - cut the capabilities to the file server's set (see Capabilities) in
//     the effective, permitted and bounding sets, and empty the inheritable
//     and ambient sets, on every thread;
//   - set no_new_privs on every thread;
//   - install a seccomp allowlist (see Filter) on every thread (TSYNC).
//
// The automatic mode picks namespace when the process is root in a mount
// namespace of its own (see InPrivateMountNS), else chroot when root, else
// none, and logs which and why. Mode none only sets umask and the limit.
//
// Everything the daemon needs from the host must be open before Apply:
// export fds, the /proc/self/fd handle hostfs keeps, the listener. Those
// fds stay valid: a detached mount stays reachable through an open fd.
//
// Open the export fds after Prepare: Prepare creates the bind mount that
// becomes "/", and an fd opened through it sees the export's submounts
// (and mounts the host adds later, by propagation) and cannot climb out of
// the export with "..". An fd opened before Prepare refers to the host's
// mount, which the pivot detaches: it keeps working, but it no longer sees
// submounts below it and ".." leads out of the export. The same would hold
// for extra exports, whatever the order, so open those with
// Sandbox.OpenExport: in namespace mode it serves each through a detached
// clone of its mount tree, which keeps its submounts and whose ".." stays
// inside (hostfs never walks "..", but defence in depth).
//
// Changing credentials on every thread uses syscall.AllThreadsSyscall, which
// the Go runtime refuses in a binary linked with cgo (including every -race
// build): build the daemon with CGO_ENABLED=0. In such a binary the
// automatic mode falls back to "none" with a warning and an explicit mode
// fails with ErrCgo.
package sandbox

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Mode is a confinement mode: the value of the "sandbox" configuration key
// and of the serve command's --sandbox flag.
type Mode string

// Modes, strongest first.
const (
	// ModeAuto picks the strongest mode that works here: namespace, else
	// chroot, else none.
	ModeAuto Mode = ""
	// ModeNamespace pivots into the export in a private mount namespace.
	ModeNamespace Mode = "namespace"
	// ModeChroot chroots into the export.
	ModeChroot Mode = "chroot"
	// ModeNone confines nothing; it only sets umask 0 and RLIMIT_NOFILE.
	ModeNone Mode = "none"
)

// ParseMode checks a configuration or flag value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeNamespace, ModeChroot, ModeNone:
		return m, nil
	}
	return "", errors.Wrapf(ErrUnknownMode, "sandbox %q (want namespace, chroot or none)", s)
}

// Config says what to confine.
type Config struct {
	// Mode is the mode asked for; ModeAuto picks one.
	Mode Mode
	// Root is the root export's host path: it becomes "/" (absolute).
	Root string
	// ReadOnly marks the root export read-only: in namespace mode the new
	// root is mounted read-only as well.
	ReadOnly bool
	// NoFile is the RLIMIT_NOFILE the daemon needs (fid cap times
	// connections plus slack). The soft limit is raised to it, and the hard
	// limit too where that is allowed; zero leaves the limits alone.
	NoFile uint64
	// Logger receives what was applied and why; nil logs nothing.
	Logger *logrus.Entry
}

// Sandbox is a confinement prepared by Prepare and applied by Apply.
type Sandbox struct {
	cfg     Config
	mode    Mode
	pid     int
	log     *logrus.Entry
	keep    capSet
	filter  []unix.SockFilter
	applied bool
}

// Prepare decides the mode and does what must precede opening the exports.
// In namespace mode it makes every mount in the daemon's (private) mount
// namespace a slave, bind-mounts cfg.Root onto itself with nosuid and nodev
// (and read-only when cfg.ReadOnly), and detaches a procfs mounted at
// Root/proc. It also does, while /proc and the host's files are still
// there, everything Apply will need later: it loads the local time zone,
// reads the capability sets and assembles the seccomp filter.
//
// In namespace mode it also mounts a fresh procfs over /proc (see
// mountProc), so the /proc/self/fd handle hostfs opens after Prepare shows
// only the daemon's own pid namespace.
//
// What Prepare changes stays in the daemon's own mount namespace and is not
// undone on error: the daemon is expected to exit.
func Prepare(cfg Config) (*Sandbox, error) {
	s := &Sandbox{cfg: cfg, log: logger(cfg.Logger), pid: LauncherPID()}
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if cfg.Mode != ModeNone && !filepath.IsAbs(cfg.Root) {
		return nil, errors.Wrapf(ErrRelativeRoot, "sandbox root %q", cfg.Root)
	}
	mode, why, err := s.resolve()
	if err != nil {
		return nil, err
	}
	s.mode = mode
	entry := s.log.WithFields(logrus.Fields{"mode": string(mode), "asked": string(cfg.Mode), "root": cfg.Root})
	if mode == ModeNone && cfg.Mode == ModeAuto && os.Geteuid() == 0 {
		// Root, yet unconfined: worth a warning.
		entry.Warn("sandbox none: " + why)
	} else {
		entry.Info("sandbox " + string(mode) + ": " + why)
	}
	if mode == ModeNone {
		return s, nil
	}

	// time.Local loads /etc/localtime on first use: load it now from the
	// host, not later from the export (guest-controlled content).
	_ = time.Local.String()
	if s.filter, err = assemble(Filter()); err != nil {
		return nil, &StepError{Step: "assemble seccomp filter", Err: err}
	}
	if mode == ModeNamespace {
		if err := prepareRoot(cfg.Root, cfg.ReadOnly, s.log); err != nil {
			return nil, err
		}
		if err := mountProc(s.log); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Mode is the mode Prepare chose.
func (s *Sandbox) Mode() Mode { return s.mode }

// PID is the daemon's process id as the launcher sees it: as the /proc
// mounted when Prepare started numbers it. In a pid namespace of its own
// (the launcher starts the daemon in one) os.Getpid is 1; this is the pid
// to print and to stop.
func (s *Sandbox) PID() int { return s.pid }

// LauncherPID reads this process's id from /proc/self, which names it in
// the pid namespace of whoever mounted /proc (the launcher's, as long as
// Prepare has not mounted a fresh procfs), falling back to os.Getpid. Call
// it before Prepare; Sandbox.PID has the value Prepare read.
func LauncherPID() int {
	if l, err := os.Readlink("/proc/self"); err == nil {
		if pid, err := strconv.Atoi(l); err == nil && pid > 0 {
			return pid
		}
	}
	return os.Getpid()
}

// Apply confines the process (see the package comment for the steps). Call
// it once, after the exports and every other host resource are open and
// before serving starts. On error the process may be partly confined: it
// must not serve.
func (s *Sandbox) Apply() error {
	if s.applied {
		return ErrApplied
	}
	s.applied = true

	// umask is process-wide (Go threads share fs state).
	unix.Umask(0)
	if err := raiseNoFile(s.cfg.NoFile, s.log); err != nil {
		return err
	}
	switch s.mode {
	case ModeNone:
		return nil
	case ModeNamespace:
		if err := pivotInto(s.cfg.Root); err != nil {
			return err
		}
	case ModeChroot:
		if err := chrootInto(s.cfg.Root); err != nil {
			return err
		}
	}
	if err := procUnreachable(); err != nil {
		return err
	}
	// syscall.Setgroups changes every thread (AllThreadsSyscall); the
	// x/sys/unix one changes only the calling thread.
	if err := syscall.Setgroups(nil); err != nil {
		return &StepError{Step: "setgroups", Err: errors.WithStack(err)}
	}
	if err := limitCapabilities(s.keep); err != nil {
		return err
	}
	if err := allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
		return &StepError{Step: "no_new_privs", Err: err}
	}
	if err := installFilter(s.filter); err != nil {
		return &StepError{Step: "seccomp", Err: err}
	}
	s.log.WithFields(logrus.Fields{"mode": string(s.mode), "capabilities": s.keep.String()}).Info("sandbox applied")
	return nil
}

// Apply prepares and applies a sandbox in one call and returns the mode
// applied. Use Prepare and Sandbox.Apply instead when exports are opened in
// between (see the package comment).
func Apply(cfg Config) (Mode, error) {
	s, err := Prepare(cfg)
	if err != nil {
		return "", err
	}
	return s.mode, s.Apply()
}

// resolve picks the mode to apply and says why. The capability set to keep
// is computed here, while the process still holds everything.
func (s *Sandbox) resolve() (Mode, string, error) {
	asked := s.cfg.Mode
	if asked == ModeNone {
		return ModeNone, "asked for", nil
	}
	// refuse falls back to none in auto mode and fails an explicit mode.
	refuse := func(err error, why string) (Mode, string, error) {
		if asked == ModeAuto {
			return ModeNone, why, nil
		}
		return "", "", errors.Wrapf(err, "sandbox %s", asked)
	}
	if euid := os.Geteuid(); euid != 0 {
		return refuse(errors.Wrapf(ErrNotPrivileged, "euid %d is not root", euid), "not root")
	}
	if isHostRoot(s.cfg.Root) {
		return refuse(errors.Wrapf(ErrRootIsHostRoot, "root %s", s.cfg.Root), "the root export is the host's /")
	}
	if archSyscalls == nil {
		return refuse(errors.Wrapf(ErrUnsupportedArch, "GOARCH %s", runtime.GOARCH), "no seccomp allowlist for "+runtime.GOARCH)
	}
	if !allThreadsSupported() {
		return refuse(ErrCgo, "binary linked with cgo (build it with CGO_ENABLED=0)")
	}
	held, err := currentCapabilities()
	if err != nil {
		return "", "", &StepError{Step: "capget", Err: err}
	}
	s.keep = fileServerCaps & held.permitted
	if missing := confineCaps &^ held.effective; missing != 0 {
		return refuse(errors.Wrapf(ErrNotPrivileged, "missing capabilities %s", missing), "missing capabilities "+missing.String())
	}
	if asked == ModeChroot {
		return ModeChroot, "asked for", nil
	}

	// Namespace mode, asked for or the first choice of auto.
	if !held.effective.has(capSysAdmin) {
		err = errors.Wrap(ErrNotPrivileged, "missing capability sys_admin")
	} else if private, perr := InPrivateMountNS(); perr != nil {
		err = perr
	} else if !private {
		err = errors.Wrap(ErrSharedMountNS, "start the daemon in a mount namespace of its own: the launcher does; by hand: unshare -m fsd-launcher serve ...")
	}
	switch {
	case err == nil && asked == ModeAuto:
		return ModeNamespace, "private mount namespace", nil
	case err == nil:
		return ModeNamespace, "asked for", nil
	case asked == ModeNamespace:
		return "", "", errors.Wrap(err, "sandbox namespace")
	}
	return ModeChroot, fmt.Sprintf("namespace not possible (%v)", err), nil
}

// isHostRoot reports whether root is the host's "/" (by inode, so a
// symlink to it counts): changing root to it confines nothing, and the
// bind mount namespace mode makes would not even be seen from "/".
func isHostRoot(root string) bool {
	var a, b unix.Stat_t
	return unix.Stat(root, &a) == nil && unix.Stat("/", &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// logger returns l with this package's subsystem field, or a quiet logger.
func logger(l *logrus.Entry) *logrus.Entry {
	if l == nil {
		quiet := logrus.New()
		quiet.SetOutput(io.Discard)
		l = logrus.NewEntry(quiet)
	}
	return l.WithField("subsystem", "sandbox")
}

// raiseNoFile raises RLIMIT_NOFILE to want: the soft limit, and the hard
// limit when want exceeds it and the process may raise it. It never lowers
// a limit. A hard limit it may not raise caps the soft limit, with a warning:
// the server then answers EMFILE sooner, which is not worth refusing to start.
func raiseNoFile(want uint64, log *logrus.Entry) error {
	if want == 0 {
		return nil
	}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		return &StepError{Step: "getrlimit RLIMIT_NOFILE", Err: errors.WithStack(err)}
	}
	if cur.Cur >= want {
		return nil
	}
	next := unix.Rlimit{Cur: want, Max: max(cur.Max, want)}
	err := unix.Setrlimit(unix.RLIMIT_NOFILE, &next)
	if errors.Is(err, unix.EPERM) && cur.Max < want {
		log.WithFields(logrus.Fields{"want": want, "hard": cur.Max}).Warn("RLIMIT_NOFILE hard limit cannot be raised; using it")
		next = unix.Rlimit{Cur: cur.Max, Max: cur.Max}
		err = unix.Setrlimit(unix.RLIMIT_NOFILE, &next)
	}
	if err != nil {
		return &StepError{Step: fmt.Sprintf("setrlimit RLIMIT_NOFILE %d", next.Cur), Err: errors.WithStack(err)}
	}
	return nil
}
