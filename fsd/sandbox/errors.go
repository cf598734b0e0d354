package sandbox

import (
	"fmt"
	"io"

	"github.com/pkg/errors"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrUnknownMode: the mode is not namespace, chroot, none or empty.
	ErrUnknownMode = errors.New("unknown sandbox mode")
	// ErrRelativeRoot: Config.Root is not an absolute path.
	ErrRelativeRoot = errors.New("sandbox root is not an absolute path")
	// ErrNotPrivileged: the mode needs root and capabilities the process
	// lacks.
	ErrNotPrivileged = errors.New("not privileged enough")
	// ErrSharedMountNS: namespace mode refuses to pivot_root in a mount
	// namespace it shares with another process (it would change that
	// process's root too).
	ErrSharedMountNS = errors.New("mount namespace shared with another process")
	// ErrCgo: the binary is linked with cgo (every -race build is), so the Go
	// runtime cannot change credentials on every thread.
	ErrCgo = errors.New("binary linked with cgo: per-thread credentials cannot be changed on every thread")
	// ErrRootIsHostRoot: the root export is the host's "/", which no
	// root change can confine.
	ErrRootIsHostRoot = errors.New("the root export is the host's root directory")
	// ErrUnsupportedArch: no seccomp allowlist has been made for this
	// architecture.
	ErrUnsupportedArch = errors.New("no seccomp allowlist for this architecture")
	// ErrProcReachable: a procfs is still reachable at /proc after the
	// root changed.
	ErrProcReachable = errors.New("procfs reachable at /proc inside the sandbox")
	// ErrApplied: Sandbox.Apply was called twice.
	ErrApplied = errors.New("sandbox already applied")
)

// StepError says which step of Prepare or Apply failed.
type StepError struct {
	Step string // e.g. "pivot_root", "capset", "seccomp"
	Path string // the path involved, if any
	Err  error
}

// Error implements error.
func (e *StepError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("sandbox: %s %s: %v", e.Step, e.Path, e.Err)
	}
	return fmt.Sprintf("sandbox: %s: %v", e.Step, e.Err)
}

// Unwrap gives errors.Is and errors.As the cause.
func (e *StepError) Unwrap() error { return e.Err }

// Format implements fmt.Formatter: %+v adds the cause's stack trace.
func (e *StepError) Format(s fmt.State, verb rune) {
	if verb == 'v' && s.Flag('+') {
		_, _ = io.WriteString(s, e.Error()+"\n")
		_, _ = fmt.Fprintf(s, "%+v", e.Err)
		return
	}
	_, _ = io.WriteString(s, e.Error())
}
