package sandbox

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// allowed is the set of syscall names Filter allows.
func allowed(f seccomp.Filter) map[string]bool {
	out := map[string]bool{}
	for _, g := range f.Policy.Syscalls {
		if g.Action != seccomp.ActionAllow {
			continue
		}
		for _, n := range g.Names {
			out[n] = true
		}
		for _, n := range g.NamesWithCondtions {
			out[n.Name] = true
		}
	}
	return out
}

// TestFilterPolicy checks the policy's shape and that it assembles for
// this architecture (go-seccomp-bpf rejects unknown and duplicate names).
func TestFilterPolicy(t *testing.T) {
	f := Filter()
	if f.Policy.DefaultAction != seccomp.ActionErrno {
		t.Errorf("default action %v, want errno (EPERM)", f.Policy.DefaultAction)
	}
	if f.Flag&seccomp.FilterFlagTSync == 0 {
		t.Error("filter flags lack TSYNC: threads other than the caller would run unfiltered")
	}
	prog, err := assemble(f)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if len(prog) == 0 {
		t.Fatal("empty program")
	}
	allow := allowed(f)
	tests := []struct {
		name string
		want bool
	}{
		// Network and IPC beyond the pre-opened listener.
		{"socket", false}, {"connect", false}, {"bind", false}, {"listen", false},
		// New programs and privilege changes.
		{"execve", false}, {"execveat", false}, {"ptrace", false},
		{"setuid", false}, {"setgid", false}, {"setgroups", false}, {"capset", false},
		// Escaping or reshaping the filesystem view.
		{"mount", false}, {"umount2", false}, {"pivot_root", false},
		{"chroot", false}, {"fchdir", false}, {"chdir", false},
		{"unshare", false}, {"setns", false}, {"open_by_handle_at", false},
		{"name_to_handle_at", false},
		// Changing the sandbox itself.
		{"prctl", false}, {"seccomp", false}, {"setrlimit", false}, {"prlimit64", false},
		// Kernel attack surface a file server never needs.
		{"bpf", false}, {"keyctl", false}, {"perf_event_open", false},
		{"userfaultfd", false}, {"io_uring_setup", false}, {"kill", false},
		{"clone3", false}, {"epoll_create1", false}, {"pipe2", false},
		// Calls hostfs does not make today (add them with a trace when it
		// starts to).
		{"statx", false}, {"fdatasync", false}, {"fallocate", false},
		{"dup", false}, {"writev", false}, {"sendmsg", false}, {"mprotect", false},
		// Path-based calls without a directory fd (hostfs is fd-relative).
		{"open", false}, {"stat", false}, {"lstat", false},
		// What fsd does need: the transport, fd-relative file ops, the
		// runtime's threads and signals.
		{"accept4", true}, {"openat", true}, {"openat2", true}, {"splice", true},
		{"getdents64", true}, {"renameat", true}, {"linkat", true},
		{"fgetxattr", true}, {"clone", true}, {"futex", true},
		{"tgkill", true}, {"rt_sigreturn", true}, {"exit_group", true},
	}
	for _, tt := range tests {
		if allow[tt.name] != tt.want {
			t.Errorf("%s allowed = %v, want %v", tt.name, allow[tt.name], tt.want)
		}
	}
}

// TestFilterRefuses installs the filter in a re-executed child (no
// privileges needed: no_new_privs) and checks what it refuses and allows.
// It is the daemon's own filter: the child assembles Filter() and loads it
// with installFilter, as Prepare and Apply do (TestSandboxLayers in package
// fsd checks the real daemon's Seccomp line; TestSandboxConformance its
// refusals in the kernel log).
func TestFilterRefuses(t *testing.T) {
	c := startChild(t, "filter", childArgs{}, childOpts{})
	if c.report.Err != "" {
		t.Fatalf("%s\nstderr:\n%s", c.report.Err, c.stderr)
	}
	want := map[string]string{
		"socket AF_INET": "EPERM", // the example: no new network sockets
		"socket AF_UNIX": "EPERM", // nor local ones
		"unshare":        "EPERM", // no new namespaces
		"execve":         "EPERM", // no new program (the child would have been replaced)
		"chroot":         "EPERM", // no chroot games
		"setuid":         "EPERM", // no credential changes
		"openat":         "ok",    // fd-relative opens work
		"getpid":         "ok",    // the runtime's own calls work
	}
	for op, w := range want {
		if got := c.report.Ops[op]; got != w {
			t.Errorf("%s under the filter: %s, want %s", op, got, w)
		}
	}
	for tid, st := range tasks(t, c.report.Pid) {
		if st.Seccomp != 2 || !st.NoNewPrivs {
			t.Errorf("thread %s: Seccomp %d NoNewPrivs %v, want 2 true (TSYNC)", tid, st.Seccomp, st.NoNewPrivs)
		}
	}
}

// workload runs the workload child with mode and, when trace is set,
// under strace writing to trace. It talks to the child's listener, stops
// it with SIGTERM and returns its report.
func workload(t *testing.T, mode Mode, trace string) childReport {
	t.Helper()
	root, _ := exports(t)
	sock := filepath.Join(t.TempDir(), "fsd.sock")
	args := childArgs{Mode: mode, Root: root, Socket: sock, NoFile: 2048, Marker: trace != ""}
	opts := childOpts{newNS: mode != ModeNone}
	if trace != "" {
		opts.prefix = []string{straceBin, "-f", "-qq", "-o", trace}
	}
	c := startChild(t, "workload", args, opts)
	r := c.report
	// Concurrent connections, each echoing a few messages: accept, the
	// poller, reads and writes under the filter.
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() { errs <- echoRoundTrips(sock, 50) }()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Errorf("echo through the sandboxed listener: %v", err)
		}
	}
	if err := syscall.Kill(r.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		c.kill()
		t.Fatal("workload child did not stop on SIGTERM")
	}
	if c.err != nil {
		t.Errorf("workload child exit: %v (SIGTERM handling or shutdown failed)\nstderr:\n%s", c.err, c.stderr)
	}
	return r
}

func echoRoundTrips(sock string, n int) error {
	conn, err := net.DialTimeout("unix", sock, 30*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return err
	}
	rd := bufio.NewReader(conn)
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("message %d\n", i)
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		got, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if got != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
	}
	return nil
}

// TestWorkloadUnderSandbox proves the sandbox keeps a daemon-shaped process
// working: every host operation hostfs makes succeeds under the filter,
// the runtime's threads, GC and preemption work, the listener serves
// concurrent connections and SIGTERM shuts it down cleanly.
func TestWorkloadUnderSandbox(t *testing.T) {
	requireRoot(t)
	r := workload(t, ModeNamespace, "")
	if r.Mode != ModeNamespace {
		t.Fatalf("mode %q, want namespace", r.Mode)
	}
	if len(r.Ops) < 40 {
		t.Fatalf("only %d operations reported: %v", len(r.Ops), r.Ops)
	}
	for op, res := range r.Ops {
		// The *xattrat calls are Linux 6.13+: ENOSYS shows the filter
		// let them through to an older kernel.
		if res != "ok" && !(strings.HasSuffix(op, "xattrat") && res == "ENOSYS") {
			t.Errorf("%s: %s, want ok", op, res)
		}
	}
}

var straceBin = func() string {
	p, _ := exec.LookPath("strace")
	return p
}()

// straceLine matches a syscall in `strace -f` output: "PID name(" or
// "PID <... name resumed>".
var straceLine = regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)`)

// TestFilterCoversWorkload traces the workload child (unconfined, so that
// nothing is refused) and checks that every syscall it makes after the
// point where Apply would have installed the filter is on the allowlist.
// A new Go release, or hostfs starting to use a new syscall, shows here.
func TestFilterCoversWorkload(t *testing.T) {
	if straceBin == "" {
		t.Skip("needs strace (apt-get install strace)")
	}
	trace := filepath.Join(t.TempDir(), "trace")
	r := workload(t, ModeNone, trace)
	vm := filterVM(t, filterFor(r.Pid))
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allow := allowed(Filter())
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var missing []string
	marked := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !marked {
			marked = strings.Contains(line, traceMarker)
			continue
		}
		m := straceLine.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, "resumed>") {
			continue
		}
		name := m[1]
		if hex, ok := strings.CutPrefix(name, "syscall_0x"); ok {
			// An strace older than the syscall prints its number.
			if nr, err := strconv.ParseInt(hex, 16, 32); err == nil && info.SyscallNumbers[int(nr)] != "" {
				name = info.SyscallNumbers[int(nr)]
			}
		}
		if seen[name] == 0 && !allow[name] {
			missing = append(missing, fmt.Sprintf("%s (%s)", name, line))
		}
		seen[name]++
		// A call allowed only with some arguments: run the filter on the
		// arguments the trace shows.
		if nr, args, ok := tracedArgs(t, name, line); ok && allow[name] {
			if got := runFilter(t, vm, uint32(info.ID), nr, args...); got != unix.SECCOMP_RET_ALLOW {
				missing = append(missing, fmt.Sprintf("%s with these arguments (%s)", name, line))
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !marked {
		t.Fatal("trace marker not found: the trace does not cover the workload")
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range seen {
			if !yield(n) {
				return
			}
		}
	})
	t.Logf("syscalls after the marker: %v", names)
	for _, m := range missing {
		t.Errorf("not on the allowlist: %s", m)
	}
}

// tracedSymbols are the constants strace prints for the arguments the
// filter's conditions look at.
var tracedSymbols = map[string]uint64{
	"F_DUPFD": unix.F_DUPFD, "F_GETFD": unix.F_GETFD, "F_SETFD": unix.F_SETFD,
	"F_GETFL": unix.F_GETFL, "F_SETFL": unix.F_SETFL, "F_GETLK": unix.F_GETLK,
	"F_SETLK": unix.F_SETLK, "F_SETLKW": unix.F_SETLKW, "F_SETOWN": unix.F_SETOWN,
	"F_GETOWN": unix.F_GETOWN, "F_SETSIG": unix.F_SETSIG, "F_GETSIG": unix.F_GETSIG,
	"F_SETLEASE": unix.F_SETLEASE, "F_NOTIFY": unix.F_NOTIFY,
	"F_DUPFD_CLOEXEC": unix.F_DUPFD_CLOEXEC, "F_OFD_GETLK": unix.F_OFD_GETLK,
	"F_OFD_SETLK": unix.F_OFD_SETLK, "F_OFD_SETLKW": unix.F_OFD_SETLKW,
	"F_SETPIPE_SZ": unix.F_SETPIPE_SZ, "F_GETPIPE_SZ": unix.F_GETPIPE_SZ,
	"F_ADD_SEALS": unix.F_ADD_SEALS, "F_GET_SEALS": unix.F_GET_SEALS,
	"SOL_SOCKET": unix.SOL_SOCKET, "SO_SNDBUF": unix.SO_SNDBUF,
	"SO_SNDBUFFORCE": unix.SO_SNDBUFFORCE, "SO_RCVBUF": unix.SO_RCVBUF,
}

// tracedCall matches the first three arguments of a call in a trace line.
var tracedCall = regexp.MustCompile(`^\d+\s+([a-z0-9_]+)\(([^,)]+)(?:, ([^,)]+))?(?:, ([^,)]+))?`)

// tracedArgs parses the arguments the filter's conditions look at from a
// trace line of a conditionally allowed call (fcntl, tgkill, getsockopt,
// setsockopt); ok is false for any other call. An argument it cannot read
// fails the test: the check would otherwise pass unseen.
func tracedArgs(t *testing.T, name, line string) (nr int, args []uint64, ok bool) {
	t.Helper()
	nrs := map[string]int{"fcntl": unix.SYS_FCNTL, "tgkill": unix.SYS_TGKILL, "getsockopt": unix.SYS_GETSOCKOPT, "setsockopt": unix.SYS_SETSOCKOPT}
	nr, ok = nrs[name]
	if !ok {
		return 0, nil, false
	}
	m := tracedCall.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("cannot read the arguments of %s", line)
	}
	for _, a := range m[2:] {
		f := strings.Fields(a) // "F_GETFL <unfinished ...>"
		if len(f) == 0 {
			break
		}
		a = f[0]
		if v, err := strconv.ParseUint(a, 0, 64); err == nil {
			args = append(args, v)
		} else if v, found := tracedSymbols[a]; found {
			args = append(args, v)
		} else {
			args = append(args, 1<<62) // a value no condition allows
		}
	}
	return nr, args, true
}

// filterVM assembles f and loads it in x/net/bpf's VM.
func filterVM(t *testing.T, f seccomp.Filter) *bpf.VM {
	t.Helper()
	insts, err := f.Policy.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// runFilter runs the assembled policy in x/net/bpf's VM on a seccomp_data
// for syscall nr with args, as the kernel would, and returns the action.
// The VM loads words big-endian; the filter reads the kernel's native
// little-endian seccomp_data a 32-bit word at a time (the low word of an
// argument first), so each word is stored big-endian at its native place.
func runFilter(t *testing.T, vm *bpf.VM, auditArch uint32, nr int, args ...uint64) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data
	binary.BigEndian.PutUint32(data[0:], uint32(nr))
	binary.BigEndian.PutUint32(data[4:], auditArch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[16+8*i+4:], uint32(a>>32))
	}
	ret, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

// TestFilterDecisions runs the filter program on crafted syscalls: exact
// decisions, including the argument conditions, a foreign architecture
// and (on amd64) the x32 ABI.
func TestFilterDecisions(t *testing.T) {
	const pid = 4242
	vm := filterVM(t, filterFor(pid))
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	native := uint32(info.ID)
	const (
		allow = uint32(unix.SECCOMP_RET_ALLOW)
		eperm = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.EPERM)
	)
	goThread := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD)
	tests := []struct {
		name string
		arch uint32
		nr   int
		args []uint64
		want uint32
	}{
		// An allowed call is allowed whatever its arguments.
		{"openat", native, unix.SYS_OPENAT, []uint64{^uint64(0), 0, 0}, allow},
		// The example: a new socket is refused with EPERM.
		{"socket", native, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM}, eperm},
		// A syscall number nobody allowed.
		{"unknown number", native, 1000, nil, eperm},
		// clone as the Go runtime makes a thread: allowed.
		{"clone thread", native, unix.SYS_CLONE, []uint64{goThread}, allow},
		// clone without CLONE_THREAD is a new process (fork): refused.
		{"clone fork", native, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, eperm},
		// vfork-style clone, as os/exec makes: refused.
		{"clone vfork", native, unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)}, eperm},
		// mmap of data, as the runtime maps memory: allowed.
		{"mmap rw", native, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANON}, allow},
		// mmap of executable memory: refused.
		{"mmap exec", native, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC, unix.MAP_PRIVATE | unix.MAP_ANON}, eperm},
		// A set bit in the high word of prot must not slip past.
		{"mmap exec high bits", native, unix.SYS_MMAP, []uint64{0, 4096, 1<<40 | unix.PROT_EXEC, 0}, eperm},
		// tgkill: the runtime preempting its own threads, not a signal
		// to another process.
		{"tgkill own", native, unix.SYS_TGKILL, []uint64{pid, 4243, uint64(unix.SIGURG)}, allow},
		{"tgkill other", native, unix.SYS_TGKILL, []uint64{1, 1, uint64(unix.SIGKILL)}, eperm},
		{"tgkill other high bits", native, unix.SYS_TGKILL, []uint64{1<<32 | pid, 1, uint64(unix.SIGKILL)}, eperm},
		// fcntl: the commands the runtime and hostfs use, no others.
		{"fcntl F_GETFL", native, unix.SYS_FCNTL, []uint64{3, unix.F_GETFL}, allow},
		{"fcntl F_SETFL", native, unix.SYS_FCNTL, []uint64{3, unix.F_SETFL, unix.O_NONBLOCK}, allow},
		{"fcntl F_OFD_SETLK", native, unix.SYS_FCNTL, []uint64{3, unix.F_OFD_SETLK, 0}, allow},
		{"fcntl F_OFD_GETLK", native, unix.SYS_FCNTL, []uint64{3, unix.F_OFD_GETLK, 0}, allow},
		{"fcntl F_DUPFD_CLOEXEC", native, unix.SYS_FCNTL, []uint64{3, unix.F_DUPFD_CLOEXEC, 0}, allow},
		{"fcntl F_SETOWN", native, unix.SYS_FCNTL, []uint64{3, unix.F_SETOWN, 1}, eperm},
		{"fcntl F_SETSIG", native, unix.SYS_FCNTL, []uint64{3, unix.F_SETSIG, 9}, eperm},
		{"fcntl F_SETLEASE", native, unix.SYS_FCNTL, []uint64{3, unix.F_SETLEASE, 0}, eperm},
		{"fcntl F_OFD_SETLKW", native, unix.SYS_FCNTL, []uint64{3, unix.F_OFD_SETLKW, 0}, eperm},
		// The send buffer of a connection, and nothing else of a socket.
		{"setsockopt SO_SNDBUF", native, unix.SYS_SETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_SNDBUF}, allow},
		{"setsockopt SO_SNDBUFFORCE", native, unix.SYS_SETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE}, allow},
		{"getsockopt SO_SNDBUF", native, unix.SYS_GETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_SNDBUF}, allow},
		{"setsockopt SO_RCVBUF", native, unix.SYS_SETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_RCVBUF}, eperm},
		{"setsockopt SO_BINDTODEVICE", native, unix.SYS_SETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_BINDTODEVICE}, eperm},
		{"getsockopt SO_PEERCRED", native, unix.SYS_GETSOCKOPT, []uint64{5, unix.SOL_SOCKET, unix.SO_PEERCRED}, eperm},
		{"setsockopt other level", native, unix.SYS_SETSOCKOPT, []uint64{5, unix.IPPROTO_TCP, unix.SO_SNDBUF}, eperm},
		// An allowed number under another architecture's ABI is refused
		// (on amd64, i386 syscalls through int 0x80 number differently).
		{"foreign arch", 0x40000003 /* AUDIT_ARCH_I386 */, unix.SYS_OPENAT, nil, eperm},
	}
	if runtime.GOARCH == "amd64" {
		// The x32 ABI (number | 0x40000000) answers ENOSYS.
		tests = append(tests, struct {
			name string
			arch uint32
			nr   int
			args []uint64
			want uint32
		}{"x32", native, unix.SYS_OPENAT | 0x40000000, nil, uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.ENOSYS)})
	}
	for _, tt := range tests {
		if got := runFilter(t, vm, tt.arch, tt.nr, tt.args...); got != tt.want {
			t.Errorf("%s: action %#x, want %#x", tt.name, got, tt.want)
		}
	}
}
