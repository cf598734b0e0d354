package launcher

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// Sandbox hand-off (issue 8).
//
// The built-in daemon confines itself when it runs as root: it pivot_roots
// into its export inside a mount namespace of its own. A Go program cannot
// unshare its mount namespace once it runs (its threads share file system
// state, and unshare(CLONE_NEWNS) on one thread does not move the others),
// so the process that starts the daemon must create the namespace, with
// CLONE_NEWNS at clone time. With it goes CLONE_NEWPID: in a pid namespace
// of its own the daemon is the only process, and the procfs it mounts for
// its /proc/self/fd handle shows no other (see sandbox.Prepare); the pid
// the launcher records and stops is still the daemon's, as the launcher's
// namespace numbers it. That is done here, and only here:
//
//   - the daemon is the built-in one (an external daemon sandboxes itself),
//   - the launcher runs as root (euid 0: no one else may unshare a mount
//     namespace without a user namespace),
//   - cfg.Sandbox is "" (auto) or "namespace".
//
// The --sandbox flag is passed through unchanged: empty means auto, and the
// daemon picks "namespace" when it finds itself in a mount namespace of its
// own, else chroot, else none. If the kernel refuses the clone flag (EPERM
// or EINVAL, e.g. in a restricted container) and the mode is auto, the
// daemon is started once more without it, and that is logged; with an
// explicit "namespace" the failure is returned.

// namespaceFlags are the clone flags of a daemon started in namespaces of
// its own.
const namespaceFlags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID

// wantMountNamespace reports whether the daemon should start in new mount
// and pid namespaces.
func wantMountNamespace(cfg *config.Config) bool {
	return cfg.IsBuiltinDaemon() && os.Geteuid() == 0 &&
		(cfg.Sandbox == config.SandboxAuto || cfg.Sandbox == config.SandboxNamespace)
}

// startDaemonCmd starts the command that build returns, with
// namespaceFlags when wantMountNamespace says so, retrying once without it as described
// above. build is called once per attempt (an exec.Cmd cannot be started
// twice) and must set SysProcAttr.
func startDaemonCmd(cfg *config.Config, log *logrus.Entry, build func() *exec.Cmd) (*exec.Cmd, error) {
	if !wantMountNamespace(cfg) {
		cmd := build()
		return cmd, startCmd(cmd)
	}
	cmd := build()
	cmd.SysProcAttr.Cloneflags |= namespaceFlags
	err := startCmd(cmd)
	if err == nil || cfg.Sandbox != config.SandboxAuto ||
		!(errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
		return cmd, err
	}
	log.WithError(err).Warn("cannot start the daemon in new mount and pid namespaces; starting it without them (sandbox auto)")
	cmd = build()
	return cmd, startCmd(cmd)
}

// startCmd starts a daemon command; a variable so a test can make the
// kernel's refusal of the namespace flags happen.
var startCmd = startLocked

// startLocked starts cmd with the calling goroutine locked to its OS
// thread. Pdeathsig fires when the thread that forked the child exits, not
// the process; a locked thread is not retired by the Go runtime while we
// hold it (go-runc's monitor.go does the same).
func startLocked(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return errors.Wrapf(err, "start daemon %s", cmd.Path)
	}
	return nil
}
