package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The test binary re-executes itself to run a scenario in a child process:
// confinement is irreversible and process-wide, so it never happens in the
// test process itself. TestMain dispatches on these variables.
const (
	envChild = "FSD_SANDBOX_CHILD" // scenario name
	envArgs  = "FSD_SANDBOX_ARGS"  // childArgs as JSON
)

// traceMarker is the path a workload child looks up right before its
// workload, so a trace of it can be cut there.
const traceMarker = "/fsd-sandbox-trace-marker"

// childArgs parameterise a scenario.
type childArgs struct {
	Mode     Mode
	Root     string // root export
	Second   string // an extra export, opened like hostfs opens one
	ReadOnly bool
	NoFile   uint64
	// Threads is how many extra OS threads (locked goroutines) exist
	// while the sandbox is applied.
	Threads int
	// Reexec runs the scenario in a grandchild that shares this child's
	// mount namespace (so its parent shares it too).
	Reexec bool
	// Submount mounts a tmpfs holding "inner" at Root/sub before Prepare.
	Submount bool
	// SecondSubmount mounts a tmpfs holding "inner" at Second/sub before
	// Prepare.
	SecondSubmount bool
	// SecondReadOnly opens the extra export read-only (OpenExport's
	// readOnly).
	SecondReadOnly bool
	// SecondPlain opens the extra export with a plain open after Prepare
	// instead of OpenExport: what OpenExport replaced.
	SecondPlain bool
	// NoOpenTree makes open_tree answer ENOSYS, as before Linux 5.2.
	NoOpenTree bool
	// ProcMount mounts a procfs at Root/proc before Prepare, as a
	// running container's rootfs has.
	ProcMount bool
	// Socket is a unix socket path the workload child listens on.
	Socket string
	// Marker makes the workload child look up traceMarker first.
	Marker bool
	// Iterations is the benchmark child's loop count.
	Iterations int
}

// sentinels are the errors a report classifies, by name.
var sentinels = map[string]error{
	"ErrSharedMountNS":  ErrSharedMountNS,
	"ErrNotPrivileged":  ErrNotPrivileged,
	"ErrProcReachable":  ErrProcReachable,
	"ErrCgo":            ErrCgo,
	"ErrRootIsHostRoot": ErrRootIsHostRoot,
}

// childReport is what a child prints, as one JSON line on stdout.
type childReport struct {
	Pid  int
	Mode Mode
	// Err is Prepare's or Apply's error; ErrIs names the sentinels it
	// matches (errors.Is) and Step the failed step (a StepError's).
	Err   string
	ErrIs []string
	Step  string

	InPrivateNS    bool
	InPrivateNSErr string

	// Read after Apply through /proc/self/status opened before it.
	Status *Status
	Umask  string

	ProcOpen     string // open("/proc/self/status") by path after Apply
	Cwd          string // os.Getwd (getcwd is refused under the filter)
	RootEntries  []string
	SecondRead   string // a file of the extra export, through its held fd
	ProcFDReopen string // the same file reopened through the held /proc/self/fd
	SubmountRead string // Root/sub/inner through the root fd
	WriteRoot    string // create by path in "/" (only once confined)
	WriteRootFD  string // create through the root fd
	WriteSecond  string // create through the extra export's fd
	Socket       string // socket(AF_INET)

	// SecondOpen is how opening the extra export went; SecondSelf and
	// SecondDotDot are "dev:ino" of its fd and of ".." opened from it
	// after Apply; SecondSubmountRead is Second/sub/inner through it and
	// SecondMountFlags its statfs flags, after Apply.
	SecondOpen         string
	SecondSelf         string
	SecondDotDot       string
	SecondSubmountRead string
	SecondMountFlags   int64

	// Ops are the workload's results by operation.
	Ops map[string]string
	// NanosBefore and Nanos are the benchmark child's loop times before
	// and after Apply.
	NanosBefore, Nanos int64
}

// runChild runs the scenario named by envChild and exits.
func runChild(name string) {
	var a childArgs
	if err := json.Unmarshal([]byte(os.Getenv(envArgs)), &a); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad args:", err)
		os.Exit(2)
	}
	if a.Reexec {
		os.Exit(reexec(a))
	}
	var r childReport
	switch name {
	case "apply":
		r = childApply(a)
	case "filter":
		r = childFilter()
	case "hold":
		r = childReport{Pid: os.Getpid()}
	case "workload":
		os.Exit(childWorkload(a))
	case "lateview":
		os.Exit(childLateView(a))
	case "propagation":
		r = childPropagation(a)
	case "bench":
		r = childBench(a)
	default:
		fmt.Fprintln(os.Stderr, "child: unknown scenario", name)
		os.Exit(2)
	}
	if r.Pid == 0 {
		r.Pid = os.Getpid()
	}
	report(r)
	// Stay alive, confined, until the parent has looked at us.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func report(r childReport) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	_, _ = os.Stdout.Write(append(b, '\n'))
}

// reexec runs the same scenario in a grandchild in this process's mount
// namespace, passing stdio through.
func reexec(a childArgs) int {
	a.Reexec = false
	b, _ := json.Marshal(a)
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envArgs+"="+string(b))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "child: grandchild:", err)
		return 1
	}
	return 0
}

// errName is "ok", an errno's name, or the error's text.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

func childLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.JSONFormatter{})
	return logrus.NewEntry(l)
}

// lockThreads starts n goroutines, each locked to an OS thread of its own
// and blocked forever, and returns once they all run: the process then has
// at least n threads besides the runtime's.
func lockThreads(n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			runtime.LockOSThread()
			wg.Done()
			select {}
		}()
	}
	wg.Wait()
}

// childApply prepares and applies a sandbox the way fsd does (held fds
// opened around Prepare) and reports what the process sees afterwards.
func childApply(a childArgs) childReport {
	r := childReport{Pid: os.Getpid()}
	lockThreads(a.Threads)
	if a.Submount || a.ProcMount || a.SecondSubmount {
		// Keep the test's mounts out of the host namespace first.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			r.Err = "test setup: rslave: " + err.Error()
			return r
		}
	}
	if a.ProcMount {
		if err := unix.Mount("proc", filepath.Join(a.Root, "proc"), "proc", 0, ""); err != nil {
			r.Err = "test setup: procfs: " + err.Error()
			return r
		}
	}
	for _, m := range []struct {
		want bool
		sub  string
	}{{a.Submount, filepath.Join(a.Root, "sub")}, {a.SecondSubmount, filepath.Join(a.Second, "sub")}} {
		if !m.want {
			continue
		}
		if err := os.MkdirAll(m.sub, 0o755); err != nil {
			r.Err = "test setup: " + err.Error()
			return r
		}
		if err := unix.Mount("tmpfs", m.sub, "tmpfs", 0, "size=64k"); err != nil {
			r.Err = "test setup: tmpfs: " + err.Error()
			return r
		}
		if err := os.WriteFile(filepath.Join(m.sub, "inner"), []byte("inner"), 0o644); err != nil {
			r.Err = "test setup: " + err.Error()
			return r
		}
	}

	// What fsd opens before the sandbox: /proc/self/fd (hostfs) and, here,
	// our status to read after /proc is gone.
	status, statusErr := os.Open("/proc/self/status")
	procFD, procErr := unix.Open("/proc/self/fd", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if statusErr != nil || procErr != nil {
		r.Err = fmt.Sprintf("test setup: %v %v", statusErr, procErr)
		return r
	}
	private, err := InPrivateMountNS()
	r.InPrivateNS, r.InPrivateNSErr = private, errName(err)

	s, err := Prepare(Config{Mode: a.Mode, Root: a.Root, ReadOnly: a.ReadOnly, NoFile: a.NoFile, Logger: childLogger()})
	if err == nil {
		r.Mode = s.Mode()
	}
	// The exports, opened between Prepare and Apply as fsd opens them:
	// the root by path, an extra export through OpenExport.
	rootFD, _ := unix.Open(a.Root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	var secondFD int
	var openErr error
	if a.NoOpenTree {
		openTree = func(int, string, uint) (int, error) { return -1, unix.ENOSYS }
	}
	if err == nil && !a.SecondPlain {
		secondFD, openErr = s.OpenExport(a.Second, a.SecondReadOnly)
	} else {
		secondFD, openErr = unix.Open(a.Second, unix.O_DIRECTORY|unix.O_PATH|unix.O_CLOEXEC, 0)
	}
	r.SecondOpen = errName(openErr)
	if err == nil {
		err = s.Apply()
	}
	if err != nil {
		r.Err = fmt.Sprintf("%+v", err)
		for name, sentinel := range sentinels {
			if errors.Is(err, sentinel) {
				r.ErrIs = append(r.ErrIs, name)
			}
		}
		var se *StepError
		if errors.As(err, &se) {
			r.Step = se.Step
		}
	}
	// A thread created after Apply inherits the confinement.
	lockThreads(1)

	if text, err := io.ReadAll(status); err == nil {
		if st, err := ParseStatus(bytes.NewReader(text)); err == nil {
			r.Status = &st
		}
		for _, line := range strings.Split(string(text), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				r.Umask = strings.TrimSpace(v)
			}
		}
	}
	f, err := os.Open("/proc/self/status")
	if err == nil {
		f.Close()
	}
	r.ProcOpen = errName(err)
	r.Cwd, _ = os.Getwd()
	if entries, err := os.ReadDir("/"); err == nil {
		for _, e := range entries {
			r.RootEntries = append(r.RootEntries, e.Name())
		}
	}
	r.SecondRead = readAt(secondFD, "hello")
	if fd, err := unix.Openat(secondFD, "hello", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		r.ProcFDReopen = readAt(procFD, strconv.Itoa(fd))
		unix.Close(fd)
	}
	r.SubmountRead = readAt(rootFD, "sub/inner")
	r.SecondSubmountRead = readAt(secondFD, "sub/inner")
	r.SecondSelf = devIno(secondFD, "")
	r.SecondDotDot = devIno(secondFD, "..")
	var sfs unix.Statfs_t
	if unix.Fstatfs(secondFD, &sfs) == nil {
		r.SecondMountFlags = sfs.Flags
	}
	if r.Err == "" && (r.Mode == ModeNamespace || r.Mode == ModeChroot) {
		// Only where "/" is the export: elsewhere it is the host's.
		r.WriteRoot = errName(os.WriteFile("/written-by-path", []byte("x"), 0o644))
	}
	r.WriteRootFD = createAt(rootFD, "written-by-fd")
	r.WriteSecond = createAt(secondFD, "written-by-fd")
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	r.Socket = errName(err)
	return r
}

// readAt reads name relative to dirfd: its content, or an error name.
func readAt(dirfd int, name string) string {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errName(err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return errName(err)
	}
	return string(b)
}

// devIno is "dev:ino" of name opened relative to dirfd ("" is dirfd
// itself), or an error name.
func devIno(dirfd int, name string) string {
	fd := dirfd
	if name != "" {
		var err error
		if fd, err = unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return errName(err)
		}
		defer unix.Close(fd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errName(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func createAt(dirfd int, name string) string {
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	return errName(err)
}

// childFilter installs the allowlist alone (no_new_privs makes that
// possible without privileges) and tries what it must refuse and allow.
func childFilter() childReport {
	r := childReport{Ops: map[string]string{}}
	prog, err := assemble(Filter())
	if err == nil {
		err = allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1)
	}
	if err == nil {
		err = installFilter(prog)
	}
	if err != nil {
		r.Err = fmt.Sprintf("%+v", err)
		return r
	}
	try := func(name string, fd int, err error) {
		if err == nil {
			unix.Close(fd)
		}
		r.Ops[name] = errName(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	try("socket AF_INET", fd, err)
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	try("socket AF_UNIX", fd, err)
	fd, err = unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	try("openat", fd, err)
	r.Ops["unshare"] = errName(unix.Unshare(unix.CLONE_NEWNS))
	r.Ops["execve"] = errName(unix.Exec("/bin/true", []string{"true"}, nil))
	r.Ops["chroot"] = errName(unix.Chroot("/"))
	r.Ops["setuid"] = errName(unix.Setuid(0))
	r.Ops["getpid"] = "ok"
	if os.Getpid() <= 0 {
		r.Ops["getpid"] = "bad pid"
	}
	return r
}

// childPropagation proves the sandbox still receives mounts the host makes
// later under the export (mount propagation into the slave namespace). In
// its own namespace it makes a shared tmpfs at Root, starts a sandboxed
// grandchild on it, mounts a second tmpfs under Root and asks the
// grandchild to look through its root fd.
func childPropagation(a childArgs) childReport {
	r := childReport{Ops: map[string]string{}}
	fail := func(step string, err error) childReport {
		r.Err = step + ": " + err.Error()
		return r
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fail("rslave", err)
	}
	if err := unix.Mount("tmpfs", a.Root, "tmpfs", 0, "size=64k"); err != nil {
		return fail("tmpfs", err)
	}
	if err := unix.Mount("", a.Root, "", unix.MS_SHARED, ""); err != nil {
		return fail("make shared", err)
	}
	if err := os.Mkdir(filepath.Join(a.Root, "late"), 0o755); err != nil {
		return fail("mkdir", err)
	}
	b, _ := json.Marshal(childArgs{Mode: ModeNamespace, Root: a.Root, Second: a.Second})
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envChild+"=lateview", envArgs+"="+string(b))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	in, err := cmd.StdinPipe()
	if err != nil {
		return fail("pipe", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail("pipe", err)
	}
	if err := cmd.Start(); err != nil {
		return fail("start", err)
	}
	defer func() { _ = in.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "applied" {
		return fail("grandchild", errors.Errorf("said %q, want applied", lines.Text()))
	}
	late := filepath.Join(a.Root, "late")
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=64k"); err != nil {
		return fail("late tmpfs", err)
	}
	if err := os.WriteFile(filepath.Join(late, "file"), []byte("late"), 0o644); err != nil {
		return fail("late file", err)
	}
	if _, err := io.WriteString(in, "look\n"); err != nil {
		return fail("ask", err)
	}
	if !lines.Scan() {
		return fail("grandchild", errors.New("no answer"))
	}
	r.Ops["late mount seen through root fd"] = lines.Text()
	return r
}

// childLateView is childPropagation's grandchild: sandboxed in namespace
// mode, it reads late/file through its root fd when asked.
func childLateView(a childArgs) int {
	s, err := Prepare(Config{Mode: a.Mode, Root: a.Root, Logger: childLogger()})
	if err != nil {
		fmt.Println("prepare:", err)
		return 1
	}
	rootFD, err := unix.Open(a.Root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	if err := s.Apply(); err != nil {
		fmt.Println("apply:", err)
		return 1
	}
	fmt.Println("applied")
	in := bufio.NewScanner(os.Stdin)
	if in.Scan() {
		fmt.Println(readAt(rootFD, "late/file"))
	}
	return 0
}

// childWorkload is a daemon-shaped process: a pre-opened listener, export
// fds and /proc/self/fd opened around Prepare, a SIGTERM handler, then,
// after Apply, every kind of host operation hostfs makes plus the Go
// runtime's own work (threads, GC, preemption, timers) and an echo server
// on the listener. It reports the operations' results, serves until
// SIGTERM and exits 0 if the shutdown path worked.
func childWorkload(a childArgs) int {
	r := childReport{Pid: os.Getpid(), Ops: map[string]string{}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("unix", a.Socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	procFD, err := unix.Open("/proc/self/fd", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open /proc/self/fd:", err)
		return 1
	}
	s, err := Prepare(Config{Mode: a.Mode, Root: a.Root, NoFile: a.NoFile, Logger: childLogger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "prepare: %+v\n", err)
		return 1
	}
	rootFD, err := unix.Open(a.Root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open root:", err)
		return 1
	}
	if err := s.Apply(); err != nil {
		fmt.Fprintf(os.Stderr, "apply: %+v\n", err)
		return 1
	}
	r.Mode = s.Mode()
	if a.Marker {
		_ = unix.Faccessat(unix.AT_FDCWD, traceMarker, unix.F_OK, 0)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		echo(ctx, ln)
	}()
	fileOps(rootFD, procFD, r.Ops)
	runtimeWork(r.Ops)
	report(r)

	<-ctx.Done()
	ln.Close()
	wg.Wait()
	return 0
}

// echo serves the listener until ctx ends: each connection gets its lines
// back, as a 9P connection gets replies.
func echo(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			_, _ = io.Copy(c, c)
		}()
	}
}

// fileOps makes each host operation hostfs makes, the way hostfs makes
// it (relative to held fds, reopening and linking through /proc/self/fd,
// xattrs through the *xattrat calls), and records the result. An
// operation the filter refused shows EPERM.
func fileOps(root, procFD int, ops map[string]string) {
	rec := func(name string, err error) { ops[name] = errName(err) }
	rec("mkdirat", unix.Mkdirat(root, "d", 0o755))
	dir, err := unix.Openat2(root, "d", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	rec("openat2", err)
	fd, err := unix.Openat(dir, "f", unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	rec("openat create", err)
	self := strconv.Itoa(fd)
	buf := []byte("0123456789")
	_, err = unix.Pwrite(fd, buf, 0)
	rec("pwrite64", err)
	_, err = unix.Pread(fd, buf, 0)
	rec("pread64", err)
	_, err = unix.Seek(fd, 0, io.SeekStart)
	rec("lseek", err)
	_, err = unix.Write(fd, buf)
	rec("write", err)
	_, err = unix.Read(fd, buf)
	rec("read", err)
	var st unix.Stat_t
	rec("fstat", unix.Fstat(fd, &st))
	rec("fstatat", unix.Fstatat(dir, "f", &st, unix.AT_SYMLINK_NOFOLLOW))
	rec("fsync", unix.Fsync(fd))
	rec("ftruncate", unix.Ftruncate(fd, 4))
	rec("fchmodat /proc/self/fd", unix.Fchmodat(procFD, self, 0o600, 0))
	rec("fchown", unix.Fchown(fd, 0, 0))
	rec("fchownat", unix.Fchownat(dir, "f", 0, 0, unix.AT_SYMLINK_NOFOLLOW))
	ts := []unix.Timespec{{Sec: 1, Nsec: 0}, {Sec: 2, Nsec: 0}}
	rec("utimensat", unix.UtimesNanoAt(dir, "f", ts, unix.AT_SYMLINK_NOFOLLOW))
	rec("symlinkat", unix.Symlinkat("f", dir, "l"))
	_, err = unix.Readlinkat(dir, "l", make([]byte, 64))
	rec("readlinkat", err)
	rec("mknodat fifo", unix.Mknodat(dir, "p", unix.S_IFIFO|0o600, 0))
	rec("linkat AT_EMPTY_PATH", unix.Linkat(fd, "", dir, "h1", unix.AT_EMPTY_PATH))
	rec("linkat /proc/self/fd", unix.Linkat(procFD, self, dir, "h2", unix.AT_SYMLINK_FOLLOW))
	re, err := unix.Openat(procFD, self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	rec("reopen /proc/self/fd", err)
	if err == nil {
		unix.Close(re)
	}
	rec("renameat", unix.Renameat(dir, "h1", dir, "h3"))
	rec("fsetxattr", unix.Fsetxattr(fd, "user.fsd", []byte("v"), 0))
	_, err = unix.Fgetxattr(fd, "user.fsd", make([]byte, 8))
	rec("fgetxattr", err)
	_, err = unix.Flistxattr(fd, make([]byte, 64))
	rec("flistxattr", err)
	rec("fremovexattr", unix.Fremovexattr(fd, "user.fsd"))
	val := []byte("w")
	rec("setxattrat", xattrat(unix.SYS_SETXATTRAT, procFD, self, "user.at", val))
	rec("getxattrat", xattrat(unix.SYS_GETXATTRAT, procFD, self, "user.at", make([]byte, 8)))
	rec("listxattrat", xattrat(unix.SYS_LISTXATTRAT, procFD, self, "", make([]byte, 64)))
	rec("removexattrat", xattrat(unix.SYS_REMOVEXATTRAT, procFD, self, "user.at", nil))
	lock := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: 0, Len: 1}
	rec("fcntl F_OFD_SETLK", unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lock))
	lock.Type = unix.F_WRLCK
	rec("fcntl F_OFD_GETLK", unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lock))
	var sfs unix.Statfs_t
	rec("fstatfs", unix.Fstatfs(fd, &sfs))
	rd, err := unix.Openat(procFD, strconv.Itoa(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rec("reopen dir /proc/self/fd", err)
	_, err = unix.Getdents(rd, make([]byte, 4096))
	rec("getdents64", err)
	_, err = unix.Seek(rd, 0, io.SeekStart)
	rec("lseek dir", err)
	// os.File reading a directory, as a Readdir might.
	df := os.NewFile(uintptr(rd), "d")
	_, err = df.Readdirnames(-1)
	rec("readdir", err)
	df.Close()
	rec("close", unix.Close(fd))
	rec("unlinkat", unix.Unlinkat(dir, "h3", 0))
	for _, n := range []string{"h2", "l", "p", "f"} {
		_ = unix.Unlinkat(dir, n, 0)
	}
	unix.Close(dir)
	rec("unlinkat dir", unix.Unlinkat(root, "d", unix.AT_REMOVEDIR))
}

// xattrArgs is the kernel's struct xattr_args (Linux 6.13+).
type xattrArgs struct {
	value *byte
	size  uint32
	flags uint32
}

// xattrat calls one of the *xattrat syscalls on dirfd/path, as hostfs
// does through /proc/self/fd.
func xattrat(trap uintptr, dirfd int, path, name string, buf []byte) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	var n *byte
	if trap != unix.SYS_LISTXATTRAT {
		if n, err = unix.BytePtrFromString(name); err != nil {
			return err
		}
	}
	args := xattrArgs{size: uint32(len(buf))}
	if len(buf) > 0 {
		args.value = &buf[0]
	}
	var e unix.Errno
	if trap == unix.SYS_LISTXATTRAT {
		_, _, e = unix.Syscall6(trap, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	} else if trap == unix.SYS_REMOVEXATTRAT {
		_, _, e = unix.Syscall6(trap, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0, uintptr(unsafe.Pointer(n)), 0, 0)
	} else {
		_, _, e = unix.Syscall6(trap, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0, uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	}
	runtime.KeepAlive(buf)
	if e != 0 {
		return e
	}
	return nil
}

// runtimeWork makes the Go runtime do what a busy daemon makes it do after
// the sandbox: new threads, garbage collection and returning memory,
// preemption of a busy goroutine, timers, and a GOMAXPROCS refresh (the
// runtime rereads the CPU limit about once a second).
func runtimeWork(ops map[string]string) {
	lockThreads(2)
	var garbage [][]byte
	for i := 0; i < 64; i++ {
		garbage = append(garbage, make([]byte, 1<<20))
	}
	garbage = nil
	runtime.GC()
	debug.FreeOSMemory()
	done := make(chan struct{})
	go func() {
		// A loop without calls: only an asynchronous preemption
		// (SIGURG) lets the runtime stop it for the GC below.
		x := 0
		for {
			select {
			case <-done:
				return
			default:
			}
			for i := 0; i < 1e6; i++ {
				x += i
			}
			_ = x
		}
	}()
	runtime.GC()
	time.Sleep(1500 * time.Millisecond)
	close(done)
	timer := time.NewTimer(10 * time.Millisecond)
	<-timer.C
	logrus.New().WithField("subsystem", "test").Debug("logging works")
	ops["runtime"] = "ok"
}

// childBench times (in thread CPU time) a.Iterations rounds of the operations behind a 9P walk,
// getattr, open, read and clunk, relative to the root fd: once before
// Apply (after a warm-up) and once after, in the same process, so that
// the ratio does not depend on which CPU or how busy the machine was.
func childBench(a childArgs) childReport {
	r := childReport{}
	s, err := Prepare(Config{Mode: a.Mode, Root: a.Root})
	if err != nil {
		r.Err = err.Error()
		return r
	}
	root, err := unix.Open(a.Root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	buf := make([]byte, 4096)
	// Thread CPU time, not wall time: on a busy machine wall time is
	// mostly waiting for a CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
			panic(err)
		}
		return time.Duration(ts.Nano())
	}
	loop := func(n int) (time.Duration, error) {
		var st unix.Stat_t
		start := cpu()
		for i := 0; i < n; i++ {
			fd, err := unix.Openat(root, "hello", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == nil {
				err = unix.Fstat(fd, &st)
			}
			if err == nil {
				_, err = unix.Pread(fd, buf, 0)
			}
			if err == nil {
				err = unix.Close(fd)
			}
			if err != nil {
				return 0, err
			}
		}
		return cpu() - start, nil
	}
	_, err = loop(a.Iterations/10 + 1)
	var before, after time.Duration
	if err == nil {
		before, err = loop(a.Iterations)
	}
	if err == nil {
		err = s.Apply()
	}
	if err == nil {
		after, err = loop(a.Iterations)
	}
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Mode = s.Mode()
	r.NanosBefore, r.Nanos = before.Nanoseconds(), after.Nanoseconds()
	return r
}
