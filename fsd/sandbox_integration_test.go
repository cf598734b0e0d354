package fsd_test

// End-to-end tests of the daemon's sandbox (issue 8): the real
// fsd-launcher binary, built with CGO_ENABLED=0, started the way a runtime
// starts it (launcher.Start, which gives it a mount namespace of its own
// when root) and looked at from outside through /proc, driven through 9P,
// and run through the whole conformance suite.
//
// They live here, in package fsd's directory, because what they prove is
// the daemon's: its confinement, that it still serves everything once
// confined, and what confinement costs it. The launcher is only the
// realistic way to start it.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/fsd/conformance"
	"github.com/fsd-launcher/fsd-launcher/fsd/sandbox"
	"github.com/fsd-launcher/fsd-launcher/launcher"
)

// generous bounds waits that should end quickly; it asserts nothing about
// speed.
const generous = 30 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	if daemonBin.dir != "" {
		os.RemoveAll(daemonBin.dir)
	}
	os.Exit(code)
}

// daemonBin is fsd-launcher built with CGO_ENABLED=0 (the sandbox cannot
// change every thread's credentials in a cgo binary, and every -race build
// links cgo), once per test binary, in a world-readable directory so that
// an unprivileged user may run it.
var daemonBin struct {
	once sync.Once
	dir  string
	path string
	err  error
	skip string
}

func daemonBinary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: builds the fsd-launcher binary")
	}
	daemonBin.once.Do(buildDaemon)
	if daemonBin.skip != "" {
		tb.Skip(daemonBin.skip)
	}
	if daemonBin.err != nil {
		tb.Fatalf("build fsd-launcher: %+v", daemonBin.err)
	}
	return daemonBin.path
}

func buildDaemon() {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			daemonBin.skip = "no go tool at hand to build fsd-launcher with CGO_ENABLED=0"
			return
		}
	}
	dir, err := os.MkdirTemp("", "fsd-sandbox-bin-")
	if err == nil {
		daemonBin.dir = dir
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		daemonBin.err = errors.WithStack(err)
		return
	}
	daemonBin.path = filepath.Join(dir, "fsd-launcher")
	var goflags []string
	for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
		if f != "-race" {
			goflags = append(goflags, f)
		}
	}
	cmd := exec.Command(goTool, "build", "-o", daemonBin.path, "github.com/fsd-launcher/fsd-launcher/cmd/fsd-launcher")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS="+strings.Join(goflags, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		daemonBin.err = errors.Wrapf(err, "go build with CGO_ENABLED=0: %s", out)
	}
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: the sandbox changes root, capabilities and mounts")
	}
}

// shortDir is a temporary directory with a path short enough for a unix
// socket inside it.
func shortDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "fsdsb")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// threadSetup is what startOnThread sets on the forking thread, for the
// daemon to inherit.
type threadSetup struct {
	groups []int // supplementary groups; nil leaves them
	cpu    int   // the only CPU to run on; -1 leaves the affinity
}

// startOnThread runs launcher.Start with the calling goroutine locked to
// its OS thread, after giving that thread (only) the groups and CPU
// affinity of setup: the daemon is forked from this thread (the launcher
// starts it on the calling goroutine, its own thread lock nested in ours),
// so it inherits them. The thread's own state is restored before it is
// unlocked; the thread lives on, so the daemon's parent-death signal, tied
// to it, does not fire. Threads the Go runtime starts meanwhile do not
// inherit the state: it never clones a new thread from a locked one.
func startOnThread(ctx context.Context, cfg *config.Config, setup threadSetup, opts ...launcher.Option) (_ *launcher.Daemon, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if setup.groups != nil {
		old, gerr := unix.Getgroups()
		if gerr != nil {
			return nil, errors.Wrap(gerr, "getgroups")
		}
		if err := unix.Setgroups(setup.groups); err != nil {
			return nil, errors.Wrapf(err, "setgroups %v", setup.groups)
		}
		defer func() {
			if rerr := unix.Setgroups(old); rerr != nil && err == nil {
				err = errors.Wrap(rerr, "restore the thread's groups")
			}
		}()
	}
	if setup.cpu >= 0 {
		var old, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return nil, errors.Wrap(err, "sched_getaffinity")
		}
		set.Set(setup.cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return nil, errors.Wrapf(err, "sched_setaffinity CPU %d", setup.cpu)
		}
		defer func() {
			if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
				err = errors.Wrap(rerr, "restore the thread's CPU affinity")
			}
		}()
	}
	return launcher.Start(ctx, cfg, opts...)
}

// running is a daemon started through the launcher.
type running struct {
	d    *launcher.Daemon
	sock string
	hook *logtest.Hook // the launcher's log: every daemon line at info
}

// daemonLogs returns the daemon's JSON log lines (what the launcher
// relayed with field daemon=PID), parsed.
func (r *running) daemonLogs(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, e := range r.hook.AllEntries() {
		if e.Data["daemon"] != r.d.PID() || !strings.HasPrefix(e.Message, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(e.Message), &m); err != nil {
			tb.Errorf("daemon log line %q: %v", e.Message, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// dump logs everything the launcher logged, for a failed test.
func (r *running) dump(tb testing.TB) {
	tb.Helper()
	for _, e := range r.hook.AllEntries() {
		tb.Logf("launcher log: %s %v", e.Message, e.Data)
	}
}

// startDaemon starts the built-in daemon through the launcher with the
// given sandbox mode, root export and extra exports, and stops it at
// cleanup, checking that it exited 0 (its shutdown path works confined).
func startDaemon(tb testing.TB, mode, root string, mounts []config.Mount, setup threadSetup, tune func(*config.Config)) *running {
	tb.Helper()
	bin := daemonBinary(tb)
	sock := filepath.Join(shortDir(tb), "fsd.sock")
	cfg := config.Default(root, sock)
	cfg.Sandbox = mode
	cfg.Mounts = mounts
	cfg.Log = config.Log{Level: "info", Format: "json"}
	cfg.ReadyTimeout = config.Duration(generous)
	cfg.StopTimeout = config.Duration(generous)
	if tune != nil {
		tune(cfg)
	}
	logger, hook := logtest.NewNullLogger()
	r := &running{sock: sock, hook: hook}
	kmsg := watchKmsg(tb)
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	d, err := startOnThread(ctx, cfg, setup, launcher.WithExecutable(bin), launcher.WithLogger(logrus.NewEntry(logger)))
	if err != nil {
		r.dump(tb)
		tb.Fatalf("start the daemon (sandbox %q): %+v", mode, err)
	}
	r.d = d
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*generous)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			tb.Errorf("stop the daemon: %+v", err)
		}
		if err := d.Wait(); err != nil {
			tb.Errorf("daemon (sandbox %q) exit after SIGTERM: %v, want status 0", mode, err)
		}
		for _, line := range kmsg.refusals(tb, d.PID()) {
			tb.Errorf("the seccomp filter refused a syscall of the daemon (add it to fsd/sandbox's allowlist if it is needed): %s", line)
		}
		if tb.Failed() {
			r.dump(tb)
		}
	})
	return r
}

// kmsgWatch reads the kernel log from the point it was opened, for the
// seccomp filter's refusals (SECCOMP_FILTER_FLAG_LOG: audit type=1326).
// Without audit daemon the kernel prints them rate-limited, so a watch
// can miss a refusal but never invents one; the operations' own results
// are the main check.
type kmsgWatch struct {
	fd int // -1: the kernel log is not readable here
}

// watchKmsg opens /dev/kmsg at its end; it is closed at cleanup. The fd is
// read with plain non-blocking reads (an os.File would park on the poller
// instead of answering EAGAIN).
func watchKmsg(tb testing.TB) *kmsgWatch {
	tb.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Logf("kernel log not readable (%v): seccomp refusals are seen only through failing operations", err)
		return &kmsgWatch{fd: -1}
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		unix.Close(fd)
		tb.Logf("kernel log not seekable (%v)", err)
		return &kmsgWatch{fd: -1}
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &kmsgWatch{fd: fd}
}

// refusals returns the seccomp audit records of process pid logged since
// the watch began.
func (w *kmsgWatch) refusals(tb testing.TB, pid int) []string {
	tb.Helper()
	if w.fd < 0 {
		return nil
	}
	var out []string
	buf := make([]byte, 8192)
	who := fmt.Sprintf(" pid=%d ", pid)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.EINTR) {
			continue // records were overwritten before we read them; a signal
		}
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				tb.Logf("reading the kernel log: %v", err)
			}
			return out
		}
		// A record is "prio,seq,time,flags;message".
		_, msg, _ := strings.Cut(string(buf[:n]), ";")
		if strings.Contains(msg, "type=1326") && strings.Contains(msg, who) {
			out = append(out, strings.TrimSpace(msg))
		}
	}
}

// dial connects a 9P client to sock; it is closed at cleanup.
func dial(tb testing.TB, sock string, msize uint32) *p9.Client {
	tb.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := p9.NewClient(conn, p9.WithMessageSize(msize))
	if err != nil {
		conn.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// readFile attaches aname, walks names and reads the file.
func readFile(c *p9.Client, aname string, names ...string) (string, error) {
	root, err := c.Attach(aname)
	if err != nil {
		return "", err
	}
	defer root.Close()
	_, f, err := root.Walk(names)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(buf[:n]), nil
}

// writeFile attaches aname and creates name holding content.
func writeFile(c *p9.Client, aname, name, content string) error {
	root, err := c.Attach(aname)
	if err != nil {
		return err
	}
	defer root.Close()
	_, dir, err := root.Walk(nil)
	if err != nil {
		return err
	}
	defer dir.Close()
	f, _, _, err := dir.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt([]byte(content), 0)
	return err
}

// sandboxTree is a root export and two extra exports beside it, outside
// it, as a runtime lays out a VM's shares:
//
//	<base>/root/marker   "root"
//	<base>/ro/marker     "ro"    (exported read-only, tag "ro")
//	<base>/rw/marker     "rw"    (exported read-write, tag "rw")
//	<base>/rw/sub/inner  "inner" on a tmpfs of its own (a submount)
type sandboxTree struct {
	base, root, ro, rw string
}

func (tr sandboxTree) mounts() []config.Mount {
	return []config.Mount{{Tag: "ro", Source: tr.ro, ReadOnly: true}, {Tag: "rw", Source: tr.rw}}
}

// newSandboxTree makes the tree, owned by uid (0 for root), world
// searchable. With submount it mounts the tmpfs at rw/sub in this
// process's mount namespace (the daemon's starts as a copy of it),
// detached again at cleanup.
func newSandboxTree(tb testing.TB, uid int, submount bool) sandboxTree {
	tb.Helper()
	base := shortDir(tb)
	tr := sandboxTree{base: base, root: filepath.Join(base, "root"), ro: filepath.Join(base, "ro"), rw: filepath.Join(base, "rw")}
	for _, d := range []string{tr.root, tr.ro, tr.rw, filepath.Join(tr.rw, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for dir, name := range map[string]string{tr.root: "root", tr.ro: "ro", tr.rw: "rw"} {
		if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(name), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if submount {
		sub := filepath.Join(tr.rw, "sub")
		if err := unix.Mount("tmpfs", sub, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
			tb.Fatalf("mount a tmpfs at %s: %v", sub, err)
		}
		tb.Cleanup(func() {
			if err := unix.Unmount(sub, unix.MNT_DETACH); err != nil {
				tb.Errorf("unmount %s: %v", sub, err)
			}
		})
		// Nothing mounted below it propagates anywhere.
		if err := unix.Mount("", sub, "", unix.MS_PRIVATE, ""); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "inner"), []byte("inner"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		tb.Fatal(err)
	}
	if uid != 0 {
		for _, p := range []string{base, tr.root, tr.ro, tr.rw, filepath.Join(tr.rw, "sub")} {
			if err := os.Chown(p, uid, uid); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return tr
}

// taskStatuses reads /proc/PID/task/*/status: every thread's state.
func taskStatuses(tb testing.TB, pid int) map[string]sandbox.Status {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]sandbox.Status{}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name(), "status"))
		if errors.Is(err, os.ErrNotExist) {
			continue // a thread that just exited
		}
		if err != nil {
			tb.Fatal(err)
		}
		st, err := sandbox.ParseStatus(f)
		f.Close()
		if err != nil {
			tb.Fatalf("thread %d: %v", tid, err)
		}
		out[e.Name()] = st
	}
	return out
}

// sameInode reports whether a and b (followed) are the same inode.
func sameInode(tb testing.TB, a, b string) bool {
	tb.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		tb.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// TestSandboxLayers starts the built-in daemon through the launcher in
// each sandbox mode, with a root export, a read-only and a read-write extra
// export outside it (the latter with a tmpfs submount), and proves each
// layer from outside: every thread's capabilities, no_new_privs, seccomp
// and groups in /proc/PID/task/*/status, its root directory and mount
// namespace, and what its log says it chose; then that every export still
// serves through 9P, the submount of the extra export included.
func TestSandboxLayers(t *testing.T) {
	requireRoot(t)
	own, err := sandbox.ReadStatus(0)
	if err != nil {
		t.Fatal(err)
	}
	ownNS, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	// The daemon is forked with these groups: an empty Groups line then
	// proves the drop, not an empty start.
	groups := []int{100, 65534}
	keep := sandbox.CapabilityMask() & own.CapPrm
	if keep != sandbox.CapabilityMask() {
		t.Logf("this process lacks some of the file server's capabilities: expecting %#x, not %#x", keep, sandbox.CapabilityMask())
	}
	tests := []struct {
		name     string
		mode     string // the sandbox asked for
		chose    string // the mode the daemon's log must name
		why      string // and the reason it must give
		confined bool   // every layer applied
		newNS    bool   // in a mount namespace of its own
	}{
		// Namespace mode: pivoted into the export in a private mount
		// namespace the launcher made, every layer on.
		{"namespace", config.SandboxNamespace, "namespace", "asked for", true, true},
		// Chroot mode: chrooted into the export in the host's mount
		// namespace (the launcher makes none for it), every layer on.
		{"chroot", config.SandboxChroot, "chroot", "asked for", true, false},
		// The default (key absent): the strongest mode that works here,
		// namespace, and the log says why.
		{"auto", config.SandboxAuto, "namespace", "private mount namespace", true, true},
		// None: nothing is confined; the daemon keeps exactly the
		// launcher's credentials, root directory and mount namespace.
		{"none", config.SandboxNone, "none", "asked for", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newSandboxTree(t, 0, true)
			r := startDaemon(t, tt.mode, tr.root, tr.mounts(), threadSetup{groups: groups, cpu: -1}, nil)
			pid := r.d.PID()

			threads := taskStatuses(t, pid)
			if len(threads) < 2 {
				t.Errorf("daemon has %d thread(s): the every-thread check proves little", len(threads))
			}
			for tid, st := range threads {
				if tt.confined {
					got := [5]uint64{st.CapEff, st.CapPrm, st.CapBnd, st.CapInh, st.CapAmb}
					if want := [5]uint64{keep, keep, keep, 0, 0}; got != want {
						t.Errorf("thread %s: CapEff/Prm/Bnd/Inh/Amb %#x, want %#x", tid, got, want)
					}
					if !st.NoNewPrivs || st.Seccomp != 2 || len(st.Groups) != 0 {
						t.Errorf("thread %s: NoNewPrivs %v Seccomp %d Groups %v, want true, 2 (filter), none", tid, st.NoNewPrivs, st.Seccomp, st.Groups)
					}
					continue
				}
				got := [5]uint64{st.CapEff, st.CapPrm, st.CapBnd, st.CapInh, st.CapAmb}
				if want := [5]uint64{own.CapEff, own.CapPrm, own.CapBnd, own.CapInh, own.CapAmb}; got != want {
					t.Errorf("thread %s: CapEff/Prm/Bnd/Inh/Amb %#x, want the launcher's %#x", tid, got, want)
				}
				if st.NoNewPrivs || st.Seccomp != 0 || !slices.Equal(st.Groups, groups) {
					t.Errorf("thread %s: NoNewPrivs %v Seccomp %d Groups %v, want false, 0, %v (untouched)", tid, st.NoNewPrivs, st.Seccomp, st.Groups, groups)
				}
			}

			procRoot := fmt.Sprintf("/proc/%d/root", pid)
			wantRoot := "/"
			if tt.confined {
				wantRoot = tr.root
			}
			if !sameInode(t, procRoot, wantRoot) {
				t.Errorf("%s is not %s", procRoot, wantRoot)
			}
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
			if err != nil {
				t.Fatal(err)
			}
			if (ns != ownNS) != tt.newNS {
				t.Errorf("daemon mount namespace %s, the launcher's %s: own namespace = %v, want %v", ns, ownNS, ns != ownNS, tt.newNS)
			}

			checkProcHandle(t, pid, tt.chose)
			for _, e := range r.hook.AllEntries() {
				if strings.HasPrefix(e.Message, fsd.ReadyLine) && !strings.Contains(e.Message, fmt.Sprintf(" pid=%d ", pid)) {
					t.Errorf("ready line %q does not name the daemon's pid %d as the launcher sees it", e.Message, pid)
				}
			}

			var chose, applied, clones int
			for _, m := range r.daemonLogs(t) {
				msg, _ := m["msg"].(string)
				switch {
				case m["subsystem"] == "sandbox" && strings.HasPrefix(msg, "sandbox ") && strings.Contains(msg, ": "):
					chose++
					if want := "sandbox " + tt.chose + ": " + tt.why; msg != want || m["mode"] != tt.chose {
						t.Errorf("sandbox log line %q mode %v, want %q mode %s", msg, m["mode"], want, tt.chose)
					}
				case msg == "sandbox applied":
					applied++
				case msg == "extra export served through a detached clone of its mount tree":
					clones++
				}
			}
			if chose != 1 {
				t.Errorf("%d log lines name the sandbox mode, want 1", chose)
			}
			if wantApplied := map[bool]int{true: 1, false: 0}[tt.confined]; applied != wantApplied {
				t.Errorf("%d \"sandbox applied\" log lines, want %d", applied, wantApplied)
			}
			if wantClones := map[bool]int{true: 2, false: 0}[tt.chose == "namespace"]; clones != wantClones {
				t.Errorf("%d extra exports served through a mount clone, want %d", clones, wantClones)
			}

			checkExports(t, r.sock, tr)
		})
	}
}

// checkProcHandle finds the procfs directory the daemon keeps open (the
// /proc/self/fd handle hostfs reopens files through) and checks how far it
// reaches. In namespace mode it must be a procfs of the daemon's own pid
// namespace, mounted with subset=pid: from it, ".." shows one process (the
// daemon, pid 1 there) and no /proc/sys, so a compromised daemon cannot
// write the host's core_pattern or climb into another process's root. In
// chroot and none modes the handle is the host's procfs (chroot mode
// confines paths only; the README says so).
func checkProcHandle(t *testing.T, pid int, mode string) {
	t.Helper()
	h := -1
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := unix.Open(dir+"/"+e.Name(), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Statfs_t
		if unix.Fstatfs(fd, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC {
			h = fd
			break
		}
		unix.Close(fd)
	}
	if h < 0 {
		t.Fatalf("daemon %d keeps no procfs fd (hostfs's /proc/self/fd handle)", pid)
	}
	defer unix.Close(h)
	own, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	sys, sysErr := unix.Openat(h, "../../sys/kernel/core_pattern", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if sysErr == nil {
		unix.Close(sys)
	}
	top, err := unix.Openat(h, "../..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open the top of the daemon's procfs: %v", err)
	}
	f := os.NewFile(uintptr(top), "procfs")
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, n := range names {
		if n[0] >= '0' && n[0] <= '9' {
			pids = append(pids, n)
		}
	}
	if mode != "namespace" {
		if sysErr != nil || len(pids) < 2 {
			t.Errorf("%s mode: expected the host's procfs behind the handle (core_pattern: %v, %d processes)", mode, sysErr, len(pids))
		}
		return
	}
	if own == theirs {
		t.Errorf("daemon in the launcher's pid namespace %s, want one of its own", own)
	}
	if !errors.Is(sysErr, unix.ENOENT) {
		t.Errorf("core_pattern through the daemon's procfs handle: %v, want ENOENT (subset=pid)", sysErr)
	}
	if !slices.Equal(pids, []string{"1"}) {
		t.Errorf("processes visible through the daemon's procfs handle: %v, want only the daemon (1)", pids)
	}
}

// checkExports proves every export of tr serves through the daemon at
// sock: the root and both extra exports read, the read-only one refuses a
// mkdir, the read-write one takes a new file (seen on the host) and shows
// its submount.
func checkExports(t *testing.T, sock string, tr sandboxTree) {
	t.Helper()
	c := dial(t, sock, 64<<10)
	for _, tc := range []struct {
		aname string
		path  []string
		want  string
	}{
		{"", []string{"marker"}, "root"},          // the root export
		{"ro", []string{"marker"}, "ro"},          // the read-only extra export, outside the root
		{"rw", []string{"marker"}, "rw"},          // the read-write extra export, outside the root
		{"rw", []string{"sub", "inner"}, "inner"}, // a submount of an extra export
	} {
		if got, err := readFile(c, tc.aname, tc.path...); err != nil || got != tc.want {
			t.Errorf("aname %q %v: %q, %v; want %q", tc.aname, tc.path, got, err, tc.want)
		}
	}
	ro, err := c.Attach("ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Mkdir("x", 0o755, p9.NoUID, p9.NoGID); !errors.Is(err, linux.EROFS) {
		t.Errorf("mkdir in the read-only extra export: %v, want EROFS", err)
	}
	if err := writeFile(c, "rw", "new", "written"); err != nil {
		t.Errorf("create in the read-write extra export: %v", err)
	} else if b, err := os.ReadFile(filepath.Join(tr.rw, "new")); err != nil || string(b) != "written" {
		t.Errorf("the new file on the host: %q, %v; want written", b, err)
	}
}

// daemonTarget is a conformance target: the built-in daemon started
// through the launcher with sandbox mode, the suite's extra exports passed
// as [[mount]]s.
func daemonTarget(mode string) func(t *testing.T, root string, mounts []conformance.Mount) string {
	return func(t *testing.T, root string, mounts []conformance.Mount) string {
		t.Helper()
		var cm []config.Mount
		for _, m := range mounts {
			cm = append(cm, config.Mount{Tag: m.Tag, Source: m.Source, ReadOnly: m.ReadOnly})
		}
		return startDaemon(t, mode, root, cm, threadSetup{cpu: -1}, nil).sock
	}
}

// TestSandboxConformance runs the whole acceptance suite against the
// sandboxed daemon, started through the launcher, in namespace and in
// chroot mode: confinement (capabilities, seccomp, root change, mount
// clones of the extra exports) must not break any operation a guest
// makes. A syscall missing from the seccomp allowlist shows here as an
// EPERM (and a type=1326 audit record in the kernel log).
func TestSandboxConformance(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{config.SandboxNamespace, config.SandboxChroot} {
		t.Run(mode, func(t *testing.T) {
			conformance.Run(t, conformance.Target{Start: daemonTarget(mode)})
		})
	}
}

// TestSandboxUnprivileged runs the daemon as an unprivileged user (nobody
// when the test is root, else the test's own user): the default sandbox
// is none, the log says it is because the daemon is not root, and it
// serves; an explicit confining mode is refused rather than silently
// weakened.
func TestSandboxUnprivileged(t *testing.T) {
	bin := daemonBinary(t)
	uid := os.Geteuid()
	var cred *syscall.Credential
	if uid == 0 {
		uid = 65534
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	tests := []struct {
		name  string
		mode  string // --sandbox, "" for none given
		serve bool   // it must serve; else exit 1
		log   string // a log message (serving) or an error text (refused)
	}{
		// The default: none, because not root, said in the log.
		{"default", "", true, "sandbox none: not root"},
		// None asked for: none, said so.
		{"none", "none", true, "sandbox none: asked for"},
		// Namespace needs root: refused, naming why.
		{"namespace", "namespace", false, "not privileged enough"},
		// So does chroot.
		{"chroot", "chroot", false, "not privileged enough"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newSandboxTree(t, uid, false)
			sockDir := filepath.Join(tr.base, "run")
			if err := os.Mkdir(sockDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(sockDir, uid, uid); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(sockDir, "fsd.sock")
			args := []string{"serve", "--socket-path", sock, "--shared-dir", tr.root,
				"--mount", "tag=ro,source=" + tr.ro + ",ro", "--mount", "tag=rw,source=" + tr.rw,
				"--log-format", "json"}
			if tt.mode != "" {
				args = append(args, "--sandbox", tt.mode)
			}
			p := startProcess(t, bin, cred, args...)
			if !tt.serve {
				if code := p.wait(t); code != 1 || !strings.Contains(p.output(), tt.log) || strings.Contains(p.output(), fsd.ReadyLine) {
					t.Fatalf("exit %d, output:\n%s\nwant exit 1 naming %q, never ready", code, p.output(), tt.log)
				}
				return
			}
			if !p.waitReady(t) {
				t.Fatalf("not ready:\n%s", p.output())
			}
			found := false
			for _, line := range strings.Split(p.output(), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) == nil && m["subsystem"] == "sandbox" {
					found = found || (m["msg"] == tt.log && m["mode"] == "none" && m["level"] == "info")
				}
			}
			if !found {
				t.Errorf("no info line %q with mode none in the log:\n%s", tt.log, p.output())
			}
			st, err := sandbox.ReadStatus(p.cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			if st.CapEff != 0 || st.Seccomp != 0 {
				t.Errorf("unprivileged daemon: CapEff %#x Seccomp %d, want 0, 0", st.CapEff, st.Seccomp)
			}
			c := dial(t, sock, 64<<10)
			for aname, want := range map[string]string{"": "root", "ro": "ro", "rw": "rw"} {
				if got, err := readFile(c, aname, "marker"); err != nil || got != want {
					t.Errorf("aname %q marker: %q, %v; want %q", aname, got, err, want)
				}
			}
			if err := writeFile(c, "", "new", "by nobody"); err != nil {
				t.Errorf("create in the root export: %v", err)
			} else {
				var fst unix.Stat_t
				if err := unix.Stat(filepath.Join(tr.root, "new"), &fst); err != nil || int(fst.Uid) != uid {
					t.Errorf("the new file: uid %d, %v; want %d (the daemon's user)", fst.Uid, err, uid)
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d after SIGTERM, want 0:\n%s", code, p.output())
			}
		})
	}
}

// process is a daemon run directly (not through the launcher).
type process struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   strings.Builder
	ready chan struct{} // closed at the readiness line
	eof   chan struct{} // closed when stderr ends
}

// startProcess runs bin args as cred (nil: as this process) and collects
// its stderr; it is killed at cleanup if still running.
func startProcess(t *testing.T, bin string, cred *syscall.Credential, args ...string) *process {
	t.Helper()
	p := &process{ready: make(chan struct{}), eof: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.eof)
		buf := make([]byte, 4096)
		readySeen := false
		for {
			n, err := stderr.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			isReady := !readySeen && strings.Contains(p.out.String(), fsd.ReadyLine)
			p.mu.Unlock()
			if isReady {
				readySeen = true
				close(p.ready)
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			p.wait(t)
		}
	})
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitReady waits for the readiness line; false if the process ended
// first.
func (p *process) waitReady(t *testing.T) bool {
	t.Helper()
	select {
	case <-p.ready:
		return true
	case <-p.eof:
		return false
	case <-time.After(generous):
		t.Fatalf("no readiness line after %v", generous)
	}
	return false
}

// wait reads stderr to its end, reaps the process and returns its exit
// code.
func (p *process) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.eof:
	case <-time.After(generous):
		_ = p.cmd.Process.Kill()
		<-p.eof
		t.Errorf("the daemon did not exit")
	}
	_ = p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

// pinProcess restricts every thread of this process (and so every thread
// it creates) to cpu, and returns a function that restores the affinity
// the process had.
func pinProcess(tb testing.TB, cpu int) (restore func()) {
	tb.Helper()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		tb.Fatal(err)
	}
	set.Set(cpu)
	each := func(mask *unix.CPUSet) error {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return errors.WithStack(err)
		}
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, mask); err != nil && !errors.Is(err, unix.ESRCH) {
				return errors.Wrapf(err, "sched_setaffinity thread %d", tid)
			}
		}
		return nil
	}
	if err := each(&set); err != nil {
		_ = each(&orig)
		tb.Fatal(err)
	}
	return func() {
		if err := each(&orig); err != nil {
			tb.Error(err)
		}
	}
}

// daemonCPU is the CPU time, in ns, the threads of process pid have run
// so far (the first field of each /proc/PID/task/TID/schedstat).
func daemonCPU(tb testing.TB, pid int) int64 {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var sum int64
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			tb.Fatalf("%s/%s/schedstat: %q", dir, e.Name(), b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		sum += ns
	}
	return sum
}

// BenchmarkSandboxCost measures what confinement costs a guest's
// operations: getattr, walk+clunk and 1 MiB reads over p9's client against
// the daemon started through the launcher with sandbox none and namespace
// (the same CGO_ENABLED=0 binary), the daemon pinned to CPU 0 and this
// process, the client, to CPU 1. Besides the time per operation it
// reports srv-ns/op, the daemon's own CPU time per operation, which the
// seccomp filter adds to and which depends less on how busy the machine
// is. Compare the modes within one run:
//
//	go test -run '^$' -bench SandboxCost -count 3 ./fsd/
func BenchmarkSandboxCost(b *testing.B) {
	requireRoot(b)
	// One Tread carries the whole 1 MiB.
	const msize = 1<<20 + 4096
	pin := runtime.NumCPU() >= 2
	if !pin {
		b.Log("fewer than 2 CPUs: the daemon and the client are not pinned")
	}
	for _, mode := range []string{config.SandboxNone, config.SandboxNamespace} {
		b.Run(mode, func(b *testing.B) {
			tr := newSandboxTree(b, 0, false)
			if err := os.WriteFile(filepath.Join(tr.root, "big"), make([]byte, 1<<20), 0o644); err != nil {
				b.Fatal(err)
			}
			setup := threadSetup{cpu: -1}
			if pin {
				setup.cpu = 0
			}
			r := startDaemon(b, mode, tr.root, nil, setup, func(c *config.Config) { c.Limits.MaxMsize = msize })
			if pin {
				status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.d.PID()))
				if err != nil {
					b.Fatal(err)
				}
				if !strings.Contains(string(status), "Cpus_allowed_list:\t0\n") {
					b.Fatalf("the daemon is not pinned to CPU 0:\n%s", status)
				}
				defer pinProcess(b, 1)()
			}
			c := dial(b, r.sock, msize)
			root, err := c.Attach("")
			if err != nil {
				b.Fatal(err)
			}
			defer root.Close()
			names := []string{"big"}
			// measure runs the benchmark loop and reports the daemon's
			// CPU time per operation.
			measure := func(b *testing.B, op func() error) {
				start := daemonCPU(b, r.d.PID())
				for b.Loop() {
					if err := op(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(daemonCPU(b, r.d.PID())-start)/float64(b.N), "srv-ns/op")
			}

			b.Run("getattr", func(b *testing.B) {
				_, f, err := root.Walk(names)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				measure(b, func() error {
					_, _, _, err := f.GetAttr(p9.AttrMaskAll)
					return err
				})
			})
			b.Run("walk-clunk", func(b *testing.B) {
				measure(b, func() error {
					_, f, err := root.Walk(names)
					if err != nil {
						return err
					}
					return f.Close()
				})
			})
			b.Run("read-1MiB", func(b *testing.B) {
				_, f, err := root.Walk(names)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if _, _, err := f.Open(p9.ReadOnly); err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, 1<<20)
				b.SetBytes(int64(len(buf)))
				measure(b, func() error {
					n, err := f.ReadAt(buf, 0)
					if err != nil && !errors.Is(err, io.EOF) {
						return err
					}
					if n != len(buf) {
						return errors.Errorf("read %d bytes, want %d", n, len(buf))
					}
					return nil
				})
			})
		})
	}
}
