package sandbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/capability"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(envChild); name != "" {
		runChild(name)
		return
	}
	code := m.Run()
	if childBin.dir != "" {
		os.RemoveAll(childBin.dir)
	}
	os.Exit(code)
}

// childBin is the binary children run: this test binary, or, when it is
// linked with cgo (every -race build is; so is any build importing net with
// cgo enabled), a copy rebuilt with CGO_ENABLED=0, because the sandbox
// cannot change every thread's credentials in a cgo binary. It lives in a
// world-readable directory so that children may run as another user.
var childBin struct {
	once sync.Once
	dir  string
	path string
	err  error
	skip string
}

func childBinary(t testing.TB) string {
	t.Helper()
	childBin.once.Do(buildChildBinary)
	if childBin.skip != "" {
		t.Skip(childBin.skip)
	}
	if childBin.err != nil {
		t.Fatalf("child binary: %+v", childBin.err)
	}
	return childBin.path
}

func buildChildBinary() {
	dir, err := os.MkdirTemp("", "fsd-sandbox-test-")
	if err == nil {
		childBin.dir = dir
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		childBin.err = errors.WithStack(err)
		return
	}
	childBin.path = filepath.Join(dir, "sandbox.test")
	if allThreadsSupported() {
		self, err := os.Executable()
		if err == nil {
			err = copyFile(self, childBin.path)
		}
		childBin.err = err
		return
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			childBin.skip = "test binary is linked with cgo and no go tool is at hand to rebuild it with CGO_ENABLED=0"
			return
		}
	}
	var goflags []string
	for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
		if f != "-race" {
			goflags = append(goflags, f)
		}
	}
	cmd := exec.Command(goTool, "test", "-c", "-o", childBin.path, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS="+strings.Join(goflags, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		childBin.err = errors.Wrapf(err, "go test -c with CGO_ENABLED=0: %s", out)
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return errors.WithStack(err)
	}
	return errors.WithStack(os.WriteFile(to, b, 0o755))
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, pivot_root, capabilities)")
	}
}

// lockedBuffer collects a child's stderr for the failure log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// child is a running scenario.
type child struct {
	args   childArgs
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	report childReport
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

// childOpts say how to start a child.
type childOpts struct {
	newNS  bool     // CLONE_NEWNS: a mount namespace of its own
	uid    int      // run as this uid/gid when nonzero
	prefix []string // run through this command (nsenter, strace)
	bin    string   // run this binary instead of childBinary's
}

// startChild runs scenario with args and waits for its report. The child
// stays alive until stop (or the test's cleanup) closes its stdin.
func startChild(t testing.TB, scenario string, args childArgs, opts childOpts) *child {
	t.Helper()
	bin := opts.bin
	if bin == "" {
		bin = childBinary(t)
	}
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(slices.Clone(opts.prefix), bin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), envChild+"="+scenario, envArgs+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if opts.newNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS
	}
	if opts.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(opts.uid), Gid: uint32(opts.uid)}
	}
	c := &child{args: args, cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", scenario, err)
	}
	// The reader hands over the first line (the report), then drains
	// stdout; cmd.Wait runs only after it is done with the pipe.
	lines := make(chan string, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-readerDone
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { c.stop(t) })
	select {
	case line, ok := <-lines:
		if !ok {
			c.stop(t)
			t.Fatalf("%s child said nothing; exit %v; stderr:\n%s", scenario, c.err, c.stderr)
		}
		if err := json.Unmarshal([]byte(line), &c.report); err != nil {
			t.Fatalf("%s child report %q: %v", scenario, line, err)
		}
	case <-time.After(2 * time.Minute):
		c.kill()
		t.Fatalf("%s child: no report; stderr:\n%s", scenario, c.stderr)
	}
	return c
}

// stop closes the child's stdin (it exits) and waits, killing it if it
// hangs. It is safe to call twice.
func (c *child) stop(t testing.TB) {
	t.Helper()
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		c.kill()
		t.Errorf("child %d did not exit", c.cmd.Process.Pid)
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// tasks reads /proc/PID/task/*/status: the state of every thread.
func tasks(t *testing.T, pid int) map[string]Status {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Status{}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name(), "status"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := ParseStatus(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = st
	}
	return out
}

// openFilesLimit reads pid's RLIMIT_NOFILE from /proc/PID/limits
// (getrlimit is not on the allowlist, so a confined child cannot say).
func openFilesLimit(t *testing.T, pid int) (soft, hard uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if f := strings.Fields(rest); ok && len(f) >= 2 {
			soft, err1 := strconv.ParseUint(f[0], 10, 64)
			hard, err2 := strconv.ParseUint(f[1], 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("limits line %q", line)
			}
			return soft, hard
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", pid)
	return 0, 0
}

// sameFile reports whether two paths name the same inode.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// exports makes a root export and a second one, world-searchable (children
// may run as nobody), with known files.
func exports(t testing.TB) (root, second string) {
	t.Helper()
	base, err := os.MkdirTemp("", "fsd-sandbox-export-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	root, second = filepath.Join(base, "root"), filepath.Join(base, "second")
	for _, d := range []string{base, root, second, filepath.Join(root, "sub"), filepath.Join(root, "proc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, content := range map[string]string{
		filepath.Join(root, "a.txt"):   "a",
		filepath.Join(root, "b.txt"):   "b",
		filepath.Join(second, "hello"): "hello from the second export",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, second
}

func ownStatus(t *testing.T) Status {
	t.Helper()
	st, err := ReadStatus(0)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// expectConfined checks every thread of pid: capabilities exactly the
// file server's set (inheritable and ambient empty), no_new_privs, a
// seccomp filter, no supplementary groups.
func expectConfined(t *testing.T, pid int) {
	t.Helper()
	want := CapabilityMask() & ownStatus(t).CapPrm
	all := tasks(t, pid)
	if len(all) < 2 {
		t.Errorf("only %d thread(s): the all-threads check proves little", len(all))
	}
	for tid, st := range all {
		got := [5]uint64{st.CapEff, st.CapPrm, st.CapBnd, st.CapInh, st.CapAmb}
		if got != [5]uint64{want, want, want, 0, 0} {
			t.Errorf("thread %s: CapEff/Prm/Bnd/Inh/Amb = %#x, want %#x for the first three, 0 for the rest", tid, got, want)
		}
		if !st.NoNewPrivs || st.Seccomp != 2 || len(st.Groups) != 0 {
			t.Errorf("thread %s: NoNewPrivs %v Seccomp %d Groups %v, want true, 2, none", tid, st.NoNewPrivs, st.Seccomp, st.Groups)
		}
	}
}

// expectUnconfined checks that pid's threads hold what the test process
// holds: nothing was dropped.
func expectUnconfined(t *testing.T, pid int) {
	t.Helper()
	mine := ownStatus(t)
	for tid, st := range tasks(t, pid) {
		if st.CapEff != mine.CapEff || st.CapBnd != mine.CapBnd || st.NoNewPrivs || st.Seccomp != 0 {
			t.Errorf("thread %s: CapEff %#x CapBnd %#x NoNewPrivs %v Seccomp %d, want %#x %#x false 0 (untouched)",
				tid, st.CapEff, st.CapBnd, st.NoNewPrivs, st.Seccomp, mine.CapEff, mine.CapBnd)
		}
	}
}

// rootEntries are the entries exports makes in the root export.
var rootEntries = []string{"a.txt", "b.txt", "proc", "sub"}

// expectRootIsExport checks that the child's "/" is the export: by inode
// from outside, by listing from inside.
func expectRootIsExport(t *testing.T, c *child, root string) {
	t.Helper()
	if !sameFile(t, fmt.Sprintf("/proc/%d/root", c.report.Pid), root) {
		t.Errorf("/proc/%d/root is not the export %s", c.report.Pid, root)
	}
	want := rootEntries
	got := slices.Sorted(slices.Values(c.report.RootEntries))
	if !slices.Equal(got, want) {
		t.Errorf("listing / inside: %v, want the export's entries %v", got, want)
	}
	// getcwd is not on the allowlist: look from outside.
	if !sameFile(t, fmt.Sprintf("/proc/%d/cwd", c.report.Pid), root) {
		t.Errorf("working directory of %d is not the export's root", c.report.Pid)
	}
	if c.report.ProcOpen != "ENOENT" {
		t.Errorf("open /proc/self/status after the sandbox: %s, want ENOENT", c.report.ProcOpen)
	}
	// The child's mount table, as seen from its root: no procfs (the old
	// root, stacked over "/" by pivot_root, must be gone with the host's
	// /proc under it, and a procfs in the export detached).
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.report.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if _, after, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(after, "proc ") {
			t.Errorf("procfs in the child's mount table: %s", line)
		}
	}
}

// expectHeldFDsWork checks what must keep working through fds opened
// before Apply.
func expectHeldFDsWork(t *testing.T, r childReport) {
	t.Helper()
	const hello = "hello from the second export"
	if r.SecondRead != hello {
		t.Errorf("extra export through its held fd: %q, want %q", r.SecondRead, hello)
	}
	if r.ProcFDReopen != hello {
		t.Errorf("reopen through the held /proc/self/fd: %q, want %q", r.ProcFDReopen, hello)
	}
	if r.WriteSecond != "ok" {
		t.Errorf("create in the extra export through its fd: %s", r.WriteSecond)
	}
}

// hostDevIno is "dev:ino" of path, as devIno reports it in a child.
func hostDevIno(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// expectClonedSecond checks the extra export OpenExport opened in
// namespace mode: its fd is the export, ".." from it stays at it, its
// submount is seen after the pivot, and its mount has nosuid and nodev.
func expectClonedSecond(t *testing.T, r childReport, second string) {
	t.Helper()
	if r.SecondOpen != "ok" {
		t.Fatalf("OpenExport: %s", r.SecondOpen)
	}
	if want := hostDevIno(t, second); r.SecondSelf != want {
		t.Errorf("extra export fd is %s, want the export %s", r.SecondSelf, want)
	}
	if r.SecondDotDot != r.SecondSelf {
		t.Errorf(`".." from the extra export's root is %s, want the root itself %s`, r.SecondDotDot, r.SecondSelf)
	}
	if r.SecondSubmountRead != "inner" {
		t.Errorf("extra export's submount after the pivot: %q, want inner", r.SecondSubmountRead)
	}
	if want := int64(unix.ST_NOSUID | unix.ST_NODEV); r.SecondMountFlags&want != want {
		t.Errorf("extra export's mount flags %#x lack nosuid,nodev", r.SecondMountFlags)
	}
}

func TestApply(t *testing.T) {
	requireRoot(t)
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	const noFile = 4096
	tests := []struct {
		name  string
		args  childArgs
		opts  childOpts
		check func(t *testing.T, c *child, root string)
	}{{
		// Proves every layer of namespace mode: pivot into the export,
		// /proc gone, capabilities/no_new_privs/seccomp/groups on every
		// thread (extra locked threads and one made afterwards), umask
		// and rlimit; held fds (extra export, /proc/self/fd) still work;
		// a submount of the export stays visible through the root fd
		// opened after Prepare; a procfs-free /proc directory stays; the
		// extra export (outside the root) is a mount clone of its own:
		// its submount is kept and ".." at its root stays there.
		name: "namespace",
		args: childArgs{Mode: ModeNamespace, Threads: 4, Submount: true, SecondSubmount: true, NoFile: noFile},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNamespace || r.Err != "" {
				t.Fatalf("mode %q err %s, want namespace", r.Mode, r.Err)
			}
			if !r.InPrivateNS {
				t.Errorf("InPrivateMountNS false in a CLONE_NEWNS child (%s)", r.InPrivateNSErr)
			}
			expectConfined(t, r.Pid)
			expectRootIsExport(t, c, root)
			expectHeldFDsWork(t, r)
			expectClonedSecond(t, r, c.args.Second)
			if r.SubmountRead != "inner" {
				t.Errorf("submount through the root fd: %q, want inner", r.SubmountRead)
			}
			if r.WriteRoot != "ok" || r.WriteRootFD != "ok" {
				t.Errorf("create in a read-write root: by path %s, by fd %s", r.WriteRoot, r.WriteRootFD)
			}
			if r.Socket != "EPERM" {
				t.Errorf("socket(AF_INET) under the filter: %s, want EPERM", r.Socket)
			}
			if r.Umask != "0000" {
				t.Errorf("umask %q, want 0000", r.Umask)
			}
			if soft, _ := openFilesLimit(t, r.Pid); soft < noFile {
				t.Errorf("RLIMIT_NOFILE soft %d, want >= %d", soft, noFile)
			}
			if r.Status == nil || r.Status.Seccomp != 2 {
				t.Errorf("own status read through the held fd: %+v", r.Status)
			}
		},
	}, {
		// Proves a read-only root export is read-only for the process,
		// by path and through the fd hostfs would hold, while an extra
		// read-write export stays writable.
		name: "namespace read-only",
		args: childArgs{Mode: ModeNamespace, ReadOnly: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNamespace || r.Err != "" {
				t.Fatalf("mode %q err %s, want namespace", r.Mode, r.Err)
			}
			if r.WriteRoot != "EROFS" || r.WriteRootFD != "EROFS" {
				t.Errorf("create in a read-only root: by path %s, by fd %s, want EROFS", r.WriteRoot, r.WriteRootFD)
			}
			expectHeldFDsWork(t, r)
		},
	}, {
		// Proves a read-only extra export is read-only for the kernel
		// too in namespace mode (its mount clone is rdonly), and still
		// readable.
		name: "namespace with a read-only extra export",
		args: childArgs{Mode: ModeNamespace, SecondReadOnly: true, SecondSubmount: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNamespace || r.Err != "" {
				t.Fatalf("mode %q err %s, want namespace", r.Mode, r.Err)
			}
			expectClonedSecond(t, r, c.args.Second)
			if r.WriteSecond != "EROFS" || r.SecondMountFlags&unix.ST_RDONLY == 0 {
				t.Errorf("create in the read-only extra export: %s, mount flags %#x; want EROFS and rdonly", r.WriteSecond, r.SecondMountFlags)
			}
			if r.SecondRead != "hello from the second export" {
				t.Errorf("read from the read-only extra export: %q", r.SecondRead)
			}
		},
	}, {
		// Proves why OpenExport clones: an extra export opened in place
		// after Prepare, as it used to be, loses its submount at the
		// pivot, and ".." from it leads out of the export.
		name: "namespace with an extra export opened in place",
		args: childArgs{Mode: ModeNamespace, SecondPlain: true, SecondSubmount: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNamespace || r.Err != "" || r.SecondOpen != "ok" {
				t.Fatalf("mode %q err %s open %s, want namespace", r.Mode, r.Err, r.SecondOpen)
			}
			if r.SecondSubmountRead != "ENOENT" {
				t.Errorf("submount through a plain fd after the pivot: %q, want ENOENT (lost)", r.SecondSubmountRead)
			}
			if r.SecondDotDot == r.SecondSelf {
				t.Errorf(`".." from a plain fd stayed at the export (%s): the clone would not be needed`, r.SecondSelf)
			}
		},
	}, {
		// Proves OpenExport's fallback where the kernel has no
		// open_tree: the extra export is opened in place (it serves, its
		// submount is lost at the pivot), with a warning.
		name: "namespace without open_tree",
		args: childArgs{Mode: ModeNamespace, SecondSubmount: true, NoOpenTree: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNamespace || r.Err != "" || r.SecondOpen != "ok" {
				t.Fatalf("mode %q err %s open %s, want namespace, ok", r.Mode, r.Err, r.SecondOpen)
			}
			expectHeldFDsWork(t, r)
			if r.SecondSubmountRead != "ENOENT" {
				t.Errorf("submount through the fallback fd: %q, want ENOENT", r.SecondSubmountRead)
			}
			c.stop(t) // all of stderr is in once it has exited
			if !strings.Contains(c.stderr.String(), `"level":"warning","msg":"cannot clone the extra export's mount tree`) {
				t.Errorf("no warning about the fallback in the log:\n%s", c.stderr)
			}
		},
	}, {
		// Proves the automatic mode picks namespace where it can.
		name: "auto in a private namespace",
		args: childArgs{Mode: ModeAuto},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			if c.report.Mode != ModeNamespace || c.report.Err != "" {
				t.Fatalf("mode %q err %s, want namespace", c.report.Mode, c.report.Err)
			}
			expectConfined(t, c.report.Pid)
			expectRootIsExport(t, c, root)
		},
	}, {
		// Proves chroot mode: root is the export, every other layer on;
		// the extra export is opened in place (the host's tree stays
		// attached) and its submount is seen. (Run in a namespace of its
		// own all the same, to keep the machine safe from a mistake.)
		name: "chroot",
		args: childArgs{Mode: ModeChroot, Threads: 2, Submount: true, SecondSubmount: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeChroot || r.Err != "" {
				t.Fatalf("mode %q err %s, want chroot", r.Mode, r.Err)
			}
			expectConfined(t, r.Pid)
			expectRootIsExport(t, c, root)
			expectHeldFDsWork(t, r)
			if r.SecondOpen != "ok" || r.SecondSubmountRead != "inner" {
				t.Errorf("extra export: open %s, its submount %q; want ok, inner", r.SecondOpen, r.SecondSubmountRead)
			}
			if r.Socket != "EPERM" {
				t.Errorf("socket(AF_INET): %s, want EPERM", r.Socket)
			}
		},
	}, {
		// Proves a procfs mounted inside the export (a running
		// container's rootfs) is detached in namespace mode: /proc is
		// not reachable although the export had one.
		name: "namespace with a procfs in the export",
		args: childArgs{Mode: ModeNamespace, ProcMount: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			if c.report.Mode != ModeNamespace || c.report.Err != "" {
				t.Fatalf("mode %q err %s, want namespace", c.report.Mode, c.report.Err)
			}
			expectConfined(t, c.report.Pid)
			expectRootIsExport(t, c, root)
		},
	}, {
		// Proves chroot mode refuses to run with a procfs inside the
		// export, which it cannot detach (the namespace may be shared).
		name: "chroot with a procfs in the export",
		args: childArgs{Mode: ModeChroot, ProcMount: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			if !slices.Contains(c.report.ErrIs, "ErrProcReachable") {
				t.Fatalf("mode %q err %q, want ErrProcReachable", c.report.Mode, c.report.Err)
			}
		},
	}, {
		// Proves namespace mode refuses a namespace shared with the
		// parent, and pivots nothing: root and cwd unchanged, nothing
		// dropped.
		name: "namespace shared with the parent",
		args: childArgs{Mode: ModeNamespace, Reexec: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if !slices.Contains(r.ErrIs, "ErrSharedMountNS") || r.Mode != "" {
				t.Fatalf("mode %q err %q, want ErrSharedMountNS", r.Mode, r.Err)
			}
			if r.InPrivateNS {
				t.Error("InPrivateMountNS true in a namespace shared with the parent")
			}
			if !sameFile(t, fmt.Sprintf("/proc/%d/root", r.Pid), "/") || r.Cwd != cwd {
				t.Errorf("root or cwd (%s) changed although refused", r.Cwd)
			}
			expectUnconfined(t, r.Pid)
		},
	}, {
		// Proves the automatic mode falls back to chroot when the
		// namespace is shared.
		name: "auto in a namespace shared with the parent",
		args: childArgs{Mode: ModeAuto, Reexec: true},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			if c.report.Mode != ModeChroot || c.report.Err != "" {
				t.Fatalf("mode %q err %s, want chroot", c.report.Mode, c.report.Err)
			}
			expectConfined(t, c.report.Pid)
			expectRootIsExport(t, c, root)
		},
	}, {
		// Proves explicit none changes nothing but umask and rlimit.
		name: "none",
		args: childArgs{Mode: ModeNone, NoFile: noFile},
		opts: childOpts{newNS: true},
		check: func(t *testing.T, c *child, root string) {
			r := c.report
			if r.Mode != ModeNone || r.Err != "" {
				t.Fatalf("mode %q err %s, want none", r.Mode, r.Err)
			}
			expectUnconfined(t, r.Pid)
			if soft, _ := openFilesLimit(t, r.Pid); r.Cwd != cwd || r.ProcOpen != "ok" || r.Umask != "0000" || soft < noFile {
				t.Errorf("cwd %s /proc %s umask %s nofile %d, want %s ok 0000 >=%d", r.Cwd, r.ProcOpen, r.Umask, soft, cwd, noFile)
			}
		},
	}, {
		// Proves RLIMIT_NOFILE above the hard limit: both limits are
		// raised where CAP_SYS_RESOURCE allows, else the soft limit
		// goes up to the hard one (a warning, not a failure).
		name: "rlimit above the hard limit",
		args: childArgs{Mode: ModeNone, NoFile: 1 << 20},
		check: func(t *testing.T, c *child, root string) {
			if c.report.Mode != ModeNone || c.report.Err != "" {
				t.Fatalf("mode %q err %s, want none", c.report.Mode, c.report.Err)
			}
			_, myHard := openFilesLimit(t, os.Getpid())
			want := myHard
			if capSet(ownStatus(t).CapEff).has(capability.CAP_SYS_RESOURCE) {
				want = 1 << 20
			}
			if soft, hard := openFilesLimit(t, c.report.Pid); soft != want || hard < soft {
				t.Errorf("RLIMIT_NOFILE %d/%d, want soft %d", soft, hard, want)
			}
		},
	}, {
		// Proves that without root the automatic mode is none and the
		// log says why.
		name: "auto as nobody",
		args: childArgs{Mode: ModeAuto},
		opts: childOpts{uid: 65534},
		check: func(t *testing.T, c *child, root string) {
			if c.report.Mode != ModeNone || c.report.Err != "" {
				t.Fatalf("mode %q err %s, want none", c.report.Mode, c.report.Err)
			}
			c.stop(t) // all of stderr is in once it has exited
			if !strings.Contains(c.stderr.String(), "sandbox none: not root") {
				t.Errorf("log does not say why: %s", c.stderr)
			}
		},
	}, {
		// Proves an explicit mode without root is an error, not a
		// silent none.
		name: "namespace as nobody",
		args: childArgs{Mode: ModeNamespace},
		opts: childOpts{uid: 65534, newNS: true},
		check: func(t *testing.T, c *child, root string) {
			if !slices.Contains(c.report.ErrIs, "ErrNotPrivileged") {
				t.Fatalf("mode %q err %q, want ErrNotPrivileged", c.report.Mode, c.report.Err)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, second := exports(t)
			tt.args.Root, tt.args.Second = root, second
			c := startChild(t, "apply", tt.args, tt.opts)
			tt.check(t, c, root)
			if t.Failed() {
				t.Logf("child report: %+v\nchild stderr:\n%s", c.report, c.stderr)
			}
		})
	}
}

// TestOpenExport covers OpenExport where it opens in place (mode none, as
// in chroot mode; namespace mode is TestApply's, in children): the fd it
// returns, and its refusals.
func TestOpenExport(t *testing.T) {
	root, second := exports(t)
	file := filepath.Join(second, "hello")
	s, err := Prepare(Config{Mode: ModeNone, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		applied bool
		want    error // nil: success
	}{
		// A directory: an O_PATH, close-on-exec fd on it.
		{"directory", second, false, nil},
		// A missing export is an error naming the path.
		{"missing", filepath.Join(second, "missing"), false, unix.ENOENT},
		// A regular file is no export.
		{"regular file", file, false, unix.ENOTDIR},
		// Too late: after Apply nothing is opened from the host.
		{"after Apply", second, true, ErrApplied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Apply is not called here (it would set this process's
			// umask): mark the sandbox applied instead.
			s.applied = tt.applied
			defer func() { s.applied = false }()
			fd, err := s.OpenExport(tt.path, false)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || fd != -1 {
					t.Fatalf("OpenExport(%s) = %d, %v; want -1, %v", tt.path, fd, err, tt.want)
				}
				if se := (*StepError)(nil); errors.As(err, &se) && se.Path != tt.path {
					t.Errorf("error %v names %q, want %q", err, se.Path, tt.path)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenExport(%s): %v", tt.path, err)
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%d:%d", st.Dev, st.Ino); got != hostDevIno(t, tt.path) {
				t.Errorf("fd is %s, want %s", got, hostDevIno(t, tt.path))
			}
			fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			if err != nil {
				t.Fatal(err)
			}
			fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fl&unix.O_PATH == 0 || fdfl&unix.FD_CLOEXEC == 0 {
				t.Errorf("flags %#o, fd flags %#x: want O_PATH and close-on-exec", fl, fdfl)
			}
		})
	}
}

// TestCgoBinary proves what happens in a binary linked with cgo, where the
// runtime cannot change credentials on every thread: an explicit mode
// fails with ErrCgo before changing anything, the automatic mode falls
// back to none with a warning. It runs this test binary itself, which
// links cgo under -race or with cgo enabled.
func TestCgoBinary(t *testing.T) {
	requireRoot(t)
	if allThreadsSupported() {
		t.Skip("this test binary is built without cgo (run with -race or CGO_ENABLED=1)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, second := exports(t)
	c := startChild(t, "apply", childArgs{Mode: ModeNamespace, Root: root, Second: second}, childOpts{newNS: true, bin: self})
	if !slices.Contains(c.report.ErrIs, "ErrCgo") {
		t.Errorf("explicit namespace: mode %q err %q, want ErrCgo", c.report.Mode, c.report.Err)
	}
	expectUnconfined(t, c.report.Pid)
	c = startChild(t, "apply", childArgs{Mode: ModeAuto, Root: root, Second: second}, childOpts{newNS: true, bin: self})
	if c.report.Mode != ModeNone || c.report.Err != "" {
		t.Errorf("auto: mode %q err %q, want none", c.report.Mode, c.report.Err)
	}
	c.stop(t)
	if !strings.Contains(c.stderr.String(), `"level":"warning","mode":"none","msg":"sandbox none: binary linked with cgo`) {
		t.Errorf("no warning in the log:\n%s", c.stderr)
	}
}

// TestRefuseNamespaceSharedWithOther proves the namespace check looks past
// the parent and PID 1: a process that joined another's namespace (with
// nsenter) refuses namespace mode.
func TestRefuseNamespaceSharedWithOther(t *testing.T) {
	requireRoot(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	root, second := exports(t)
	holder := startChild(t, "hold", childArgs{}, childOpts{newNS: true})
	ns := fmt.Sprintf("--mount=/proc/%d/ns/mnt", holder.report.Pid)
	c := startChild(t, "apply", childArgs{Mode: ModeNamespace, Root: root, Second: second}, childOpts{prefix: []string{nsenter, ns, "--"}})
	if !slices.Contains(c.report.ErrIs, "ErrSharedMountNS") || c.report.InPrivateNS {
		t.Fatalf("err %q InPrivateNS %v, want ErrSharedMountNS and false", c.report.Err, c.report.InPrivateNS)
	}
	if !sameFile(t, fmt.Sprintf("/proc/%d/root", holder.report.Pid), "/") {
		t.Error("the holder's root changed")
	}
	expectUnconfined(t, c.report.Pid)
}

// TestMountPropagation proves why the namespace is made rslave, not
// rprivate: a mount the host makes under the export after the sandbox is
// applied reaches the daemon (Kata mounts containers into its shared
// directory while the daemon runs).
func TestMountPropagation(t *testing.T) {
	requireRoot(t)
	root, second := exports(t)
	c := startChild(t, "propagation", childArgs{Root: root, Second: second}, childOpts{newNS: true})
	if c.report.Err != "" {
		t.Fatalf("%s\nstderr:\n%s", c.report.Err, c.stderr)
	}
	if got := c.report.Ops["late mount seen through root fd"]; got != "late" {
		t.Errorf("file on a mount made after Apply: %q, want late\nstderr:\n%s", got, c.stderr)
	}
}

// TestInPrivateMountNSHere proves the check says false for the test
// process, which shares its namespace with its parent (go test).
func TestInPrivateMountNSHere(t *testing.T) {
	private, err := InPrivateMountNS()
	if errors.Is(err, unix.EACCES) && os.Geteuid() != 0 {
		t.Skipf("cannot inspect the parent process: %v", err)
	}
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if private {
		t.Error("InPrivateMountNS true for the test process")
	}
}

// TestPrepareRejects covers the checks Prepare makes before touching
// anything (safe in the test process).
func TestPrepareRejects(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		want     error
		needRoot bool // the check comes after the one for root
	}{
		// Serving the host's / cannot be confined by a root change: an
		// explicit mode says so rather than pretend.
		{"root is /", Config{Mode: ModeChroot, Root: "/"}, ErrRootIsHostRoot, true},
		// Likewise through a path that resolves to it.
		{"root resolves to /", Config{Mode: ModeNamespace, Root: "/proc/.."}, ErrRootIsHostRoot, true},
		// An unknown mode is an error naming it, not a fallback.
		{"unknown mode", Config{Mode: "jail", Root: "/srv"}, ErrUnknownMode, false},
		// A relative root would be resolved against whatever cwd.
		{"relative root", Config{Mode: ModeNamespace, Root: "srv"}, ErrRelativeRoot, false},
		// Likewise in the automatic mode.
		{"relative root auto", Config{Mode: ModeAuto, Root: "./srv"}, ErrRelativeRoot, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needRoot {
				requireRoot(t)
			}
			_, err := Prepare(tt.cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Prepare(%+v) = %v, want %v", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in   string
		want Mode
		ok   bool
	}{
		{"", ModeAuto, true},                 // empty: automatic
		{"namespace", ModeNamespace, true},   // each documented value parses
		{"chroot", ModeChroot, true},         // each documented value parses
		{"none", ModeNone, true},             // each documented value parses
		{"Namespace", "", false},             // values are case-sensitive, as in the TOML
		{"pivot", "", false},                 // anything else is refused
		{" none", "", false},                 // no trimming
		{strconv.Itoa(1), "", false},         // numbers are not modes
		{"namespace,chroot", "", false},      // one mode only
		{strings.Repeat("x", 64), "", false}, // long junk
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrUnknownMode) {
			t.Errorf("ParseMode(%q) error %v is not ErrUnknownMode", tt.in, err)
		}
	}
}
