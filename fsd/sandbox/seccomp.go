package sandbox

import (
	"os"
	"runtime"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/pkg/errors"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The seccomp allowlist. Each group says who needs it. It was built by
// tracing (strace -f) a daemon-shaped workload after its setup: the Go
// runtime, the net poller, and every host operation hostfs makes, made the
// way hostfs makes it (relative to pinned fds, reopening through
// /proc/self/fd, xattrs through the *xattrat calls). TestFilterCoversWorkload
// repeats the trace and fails on a syscall missing here. A few syscalls the
// trace cannot provoke are allowed because missing them would be fatal to
// the Go runtime; each says so. Syscalls only the setup makes (socket,
// bind, listen, mount, pivot_root, chroot, capset, prctl, seccomp,
// setrlimit, execve, epoll_create1, eventfd2...) are not allowed.
//
// Some calls are allowed only with certain arguments (see conditional):
// clone only with CLONE_THREAD (a new thread of this process, never a new
// process); mmap only without PROT_EXEC (the Go runtime never maps
// executable memory; an attacker staging code would); tgkill only to a
// thread of this process; fcntl only with the commands the runtime and
// hostfs use (no F_SETOWN, F_SETSIG, F_SETLEASE, F_NOTIFY...); getsockopt
// and setsockopt only on SO_SNDBUF (the server sizes each connection's
// send buffer, see server.WithSendBuffer).
//
// A syscall outside the list fails with EPERM, and the kernel logs it
// (SECCOMP_FILTER_FLAG_LOG: an audit record "type=1326 ... syscall=N").
// EPERM rather than killing: a syscall missed in a rare path then fails one
// guest operation, visibly, instead of taking the whole share down under a
// running VM; a compromised daemon gains nothing from the answer, as the
// call still does not run. Where the Go runtime cannot do without a call
// it treats the failure as fatal itself, so the outcome there is a kill,
// with a stack trace on stderr.
var (
	// The Go runtime: memory (mmap, see above), threads (clone, see
	// above), locks and sleeps, signals (async preemption is SIGURG sent
	// with tgkill; rt_sigreturn returns from every handler), GOMAXPROCS
	// refresh (sched_getaffinity, about once a second).
	runtimeSyscalls = []string{
		"madvise", "futex", "gettid", "getpid",
		"sched_yield", "sched_getaffinity", "rt_sigprocmask",
		"rt_sigreturn", "sigaltstack", "nanosleep", "exit_group",
		// Not provoked by the trace, fatal if refused:
		// munmap: the heap's span table growing frees the old one
		//   (the runtime crashes on a munmap failure).
		// rt_sigaction: os/signal Notify/Ignore/Reset after the
		//   sandbox, and dying of SIGPIPE on a closed stderr ("sigaction
		//   failed" is a runtime throw).
		// restart_syscall: the kernel restarts a futex or nanosleep
		//   interrupted by a signal with it.
		// clock_gettime: the vDSO falls back to the syscall when the
		//   clocksource has no vDSO support (common in VMs).
		// getrandom: crypto/rand (a failure is fatal since Go 1.24);
		//   the vDSO getrandom falls back to it.
		// exit: a thread ends when a goroutine exits while locked to it.
		"munmap", "rt_sigaction", "restart_syscall", "clock_gettime", "getrandom", "exit",
	}
	// The net poller and the 9P transport on the pre-opened listener:
	// accept (net reads the local address of each new connection), then
	// read and write.
	netSyscalls = []string{"epoll_ctl", "epoll_pwait", "accept4", "getsockname"}
	// fd I/O shared by the transport and files.
	// splice: Tread moves file data through a pipe made before the
	// sandbox into the connection (server.PipePool); no pipe2.
	ioSyscalls = []string{"read", "write", "pread64", "pwrite64", "lseek", "close", "splice"}
	// hostfs, every call relative to an fd opened before the sandbox: walk
	// and open (openat2 with RESOLVE_BENEATH), reopen through
	// /proc/self/fd, getattr, readdir, create, setattr, links (linkat with
	// AT_EMPTY_PATH, else through /proc/self/fd), rename, unlink, statfs,
	// fsync, locks (fcntl OFD locks), xattrs (f*xattr on open fds,
	// *xattrat through /proc/self/fd).
	fileSyscalls = []string{
		"openat", "openat2", "fstat", "getdents64", "readlinkat", "fstatfs",
		"fsync", "ftruncate", "fchmodat", "fchown", "fchownat", "utimensat",
		"mkdirat", "mknodat", "symlinkat", "linkat", "renameat", "unlinkat",
		"fgetxattr", "fsetxattr", "flistxattr", "fremovexattr",
		"getxattrat", "setxattrat", "listxattrat", "removexattrat",
	}
)

// fcntlCommands are the fcntl commands allowed: close-on-exec and status
// flags (the runtime's os and net packages: F_GETFL when a file is wrapped,
// F_SETFL for O_NONBLOCK, F_DUPFD_CLOEXEC), and the open file description
// locks hostfs takes and tests (Tlock, Tgetlock).
var fcntlCommands = []uint64{
	unix.F_GETFD, unix.F_SETFD, unix.F_GETFL, unix.F_SETFL, unix.F_DUPFD_CLOEXEC,
	unix.F_OFD_GETLK, unix.F_OFD_SETLK,
}

// conditional lists the calls allowed only with certain arguments (see
// the comment above runtimeSyscalls). Several entries for one name are
// alternatives; the conditions of one entry must all hold. pid is the
// process id tgkill may signal (the runtime sends SIGURG to its own
// threads for preemption: tgkill(getpid(), tid, SIGURG)).
func conditional(pid int) []seccomp.NameWithConditions {
	arg := func(n uint32, op seccomp.Operation, v uint64) seccomp.Condition {
		return seccomp.Condition{Argument: n, Operation: op, Value: v}
	}
	out := []seccomp.NameWithConditions{
		{Name: "clone", Conditions: seccomp.ArgumentConditions{arg(0, seccomp.BitsSet, unix.CLONE_THREAD)}},
		{Name: "mmap", Conditions: seccomp.ArgumentConditions{arg(2, seccomp.BitsNotSet, unix.PROT_EXEC)}},
		{Name: "tgkill", Conditions: seccomp.ArgumentConditions{arg(0, seccomp.Equal, uint64(pid))}},
		{Name: "getsockopt", Conditions: seccomp.ArgumentConditions{
			arg(1, seccomp.Equal, unix.SOL_SOCKET), arg(2, seccomp.Equal, unix.SO_SNDBUF)}},
	}
	for _, opt := range []uint64{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE} {
		out = append(out, seccomp.NameWithConditions{Name: "setsockopt", Conditions: seccomp.ArgumentConditions{
			arg(1, seccomp.Equal, unix.SOL_SOCKET), arg(2, seccomp.Equal, opt)}})
	}
	for _, cmd := range fcntlCommands {
		out = append(out, seccomp.NameWithConditions{Name: "fcntl", Conditions: seccomp.ArgumentConditions{arg(1, seccomp.Equal, cmd)}})
	}
	return out
}

// Filter is the seccomp policy Apply installs: allow exactly the syscalls
// fsd needs, answer EPERM to any other, on every thread (TSYNC), logging
// refusals. It is built fresh on each call, for the calling process (its
// pid is in the tgkill condition): build it in the process it confines.
func Filter() seccomp.Filter {
	return filterFor(os.Getpid())
}

// filterFor is Filter for the process pid.
func filterFor(pid int) seccomp.Filter {
	var allow []string
	for _, g := range [][]string{runtimeSyscalls, netSyscalls, ioSyscalls, fileSyscalls, archSyscalls} {
		allow = append(allow, g...)
	}
	return seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync | seccomp.FilterFlagLog,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionErrno,
			Syscalls: []seccomp.SyscallGroup{{
				Action:             seccomp.ActionAllow,
				Names:              allow,
				NamesWithCondtions: conditional(pid),
			}},
		},
	}
}

// assemble compiles a filter to the kernel's form. go-seccomp-bpf builds the
// program; the install is ours (see installFilter).
func assemble(f seccomp.Filter) ([]unix.SockFilter, error) {
	if archSyscalls == nil {
		return nil, errors.Errorf("no seccomp allowlist for GOARCH %s", runtime.GOARCH)
	}
	insts, err := f.Policy.Assemble()
	if err != nil {
		return nil, errors.Wrap(err, "assemble seccomp policy")
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, errors.Wrap(err, "assemble seccomp BPF")
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return prog, nil
}

// installFilter loads prog on every thread (SECCOMP_FILTER_FLAG_TSYNC) with
// refusals logged. The calling thread (and, by TSYNC, every thread) must
// have no_new_privs set or CAP_SYS_ADMIN.
//
// go-seccomp-bpf's LoadFilter is not used to install: with TSYNC the kernel
// reports a thread it could not synchronise as a positive return value
// (that thread's id) with no errno, which LoadFilter takes for success
// although no thread got the filter.
func installFilter(prog []unix.SockFilter) error {
	fprog := &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_LOG)
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(fprog)))
	if e == unix.EINVAL {
		// SECCOMP_FILTER_FLAG_LOG is Linux 4.14+.
		flags = unix.SECCOMP_FILTER_FLAG_TSYNC
		r, _, e = unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(fprog)))
	}
	if e != 0 {
		return errors.Wrap(e, "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)")
	}
	if r != 0 {
		return errors.Errorf("seccomp TSYNC: thread %d could not be synchronised", r)
	}
	return nil
}
