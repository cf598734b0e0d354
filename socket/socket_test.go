package socket

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a daemon that inherited the
// listener as fd 3 (see TestMain).
const childEnv = "FSD_SOCKET_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "serve-one":
		os.Exit(childServeOne())
	case "hold":
		os.Exit(childHold())
	case "fromfd-error":
		os.Exit(childFromFDError())
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(3)
	}
}

// childServeOne rebuilds the listener from fd 3, reports whether FromFD
// closed fd 3, answers one connection and exits.
func childServeOne() int {
	l, err := FromFD(3, "fd 3")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer l.Close()
	_, ferr := unix.FcntlInt(3, unix.F_GETFD, 0)
	c, err := l.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child accept:", err)
		return 2
	}
	defer c.Close()
	fmt.Fprintf(c, "hello fd3closed=%v\n", errors.Is(ferr, unix.EBADF))
	return 0
}

// childHold rebuilds the listener and holds it until stdin closes.
func childHold() int {
	l, err := FromFD(3, "fd 3")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer l.Close()
	fmt.Println("holding")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// childFromFDError reports which error FromFD gives for its fd 3.
func childFromFDError() int {
	_, err := FromFD(3, "fd 3")
	switch {
	case err == nil:
		fmt.Println("ok")
	case errors.Is(err, ErrNotListener):
		fmt.Println("not-listener")
	default:
		fmt.Println("other:", err)
	}
	return 0
}

// withUmask runs fn under umask m (process-wide: these tests are not
// parallel).
func withUmask(t *testing.T, m int, fn func()) {
	t.Helper()
	old := unix.Umask(m)
	defer unix.Umask(old)
	fn()
}

// openFDs counts this process's open fds.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents) - 1 // the ReadDir fd itself
}

// checkNoFDLeak fails the test when fn leaves more fds open than before.
func checkNoFDLeak(t *testing.T, fn func()) {
	t.Helper()
	before := openFDs(t)
	fn()
	if after := openFDs(t); after != before {
		t.Errorf("fd leak: %d open before, %d after", before, after)
	}
}

func perm(t *testing.T, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st.Mode & 0o7777
}

func mustListen(t *testing.T, path string, mode os.FileMode) *net.UnixListener {
	t.Helper()
	l, err := Listen(path, mode)
	if err != nil {
		t.Fatalf("Listen(%s, %#o): %v", path, mode, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// staleSocket leaves a socket file at path with nothing listening, as a
// crashed daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// dialEcho connects to path and checks that the server answers with the
// given greeting.
func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return c
}

func TestListenDirectoryAndMode(t *testing.T) {
	cases := []struct {
		name  string
		umask int
		mode  os.FileMode
	}{
		// The default: owner only, under a common umask.
		{"0600 umask 022", 0o022, 0o600},
		// Group access survives a umask that strips group write: the
		// file is chmod'ed up to exactly the requested mode.
		{"0660 umask 022", 0o022, 0o660},
		// World access under a umask that strips everything but owner.
		{"0666 umask 077", 0o077, 0o666},
		// A umask that strips owner bits too: directory and socket still
		// end up exactly as asked.
		{"0600 umask 777", 0o777, 0o600},
		// Mode 0: only root can connect; still exact.
		{"0000 umask 022", 0o022, 0},
		// Full 0777 is allowed and exact.
		{"0777 umask 000", 0, 0o777},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(base, "a", "b", "s.sock")
			var l *net.UnixListener
			withUmask(t, tc.umask, func() { l = mustListen(t, path, tc.mode) })
			if got := perm(t, path); got != uint32(tc.mode) {
				t.Errorf("socket mode %#o, want %#o", got, tc.mode)
			}
			for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b")} {
				if got := perm(t, d); got != 0o700 {
					t.Errorf("created directory %s mode %#o, want 0700", d, got)
				}
			}
			if got := perm(t, base); got != 0o755 {
				t.Errorf("existing directory %s changed to %#o", base, got)
			}
			if tc.mode&0o600 != 0o600 && os.Geteuid() != 0 {
				return // only root can connect to it
			}
			// It serves.
			go func() {
				c, err := l.Accept()
				if err == nil {
					c.Write([]byte("x"))
					c.Close()
				}
			}()
			c := dial(t, path)
			defer c.Close()
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
				t.Fatalf("read from listener: %q %v", b, err)
			}
		})
	}
}

// TestListenChmodFallback takes the path kernels before 6.6 take (no
// fchmodat2): the modes must come out the same.
func TestListenChmodFallback(t *testing.T) {
	useFchmodat2 = false
	defer func() { useFchmodat2 = true }()
	base := t.TempDir()
	path := filepath.Join(base, "d", "s.sock")
	withUmask(t, 0o777, func() { mustListen(t, path, 0o660) })
	if got := perm(t, path); got != 0o660 {
		t.Errorf("socket mode %#o, want 0660", got)
	}
	if got := perm(t, filepath.Dir(path)); got != 0o700 {
		t.Errorf("directory mode %#o, want 0700", got)
	}
}

// TestListenNoWiderWindow looks at the socket file at the only moment it
// could be more open than asked, right after bind(2) created it and before
// any chmod.
func TestListenNoWiderWindow(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o640, 0o000} {
		t.Run(fmt.Sprintf("%#o", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			var seen uint32
			var called bool
			afterBind = func(p string) {
				called = true
				seen = perm(t, p)
			}
			defer func() { afterBind = nil }()
			// umask 0: binding first and chmod'ing after would create
			// the file 0777.
			withUmask(t, 0, func() { mustListen(t, path, mode) })
			if !called {
				t.Fatal("afterBind hook not called")
			}
			if seen&^uint32(mode) != 0 {
				t.Errorf("right after bind the socket was %#o, more open than %#o", seen, mode)
			}
		})
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	cases := []struct {
		name   string
		create func(t *testing.T, path string)
	}{
		// A regular file (say, a config written to the wrong path) is
		// never deleted.
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		// A directory is refused, not replaced.
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		// A symlink to a stale socket is refused: following it would
		// let whoever planted the link choose what gets removed.
		{"symlink to stale socket", func(t *testing.T, path string) {
			target := path + ".target"
			staleSocket(t, target)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
		// A dangling symlink is refused too.
		{"dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink("/nonexistent/x", path); err != nil {
				t.Fatal(err)
			}
		}},
		// A FIFO is not a socket.
		{"fifo", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			tc.create(t, path)
			var before unix.Stat_t
			if err := unix.Lstat(path, &before); err != nil {
				t.Fatal(err)
			}
			checkNoFDLeak(t, func() {
				l, err := Listen(path, 0o600)
				if err == nil {
					l.Close()
					t.Fatal("Listen succeeded over a non-socket")
				}
				if !errors.Is(err, ErrNotSocket) {
					t.Fatalf("error %v, want ErrNotSocket", err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the path", err)
				}
			})
			var after unix.Stat_t
			if err := unix.Lstat(path, &after); err != nil {
				t.Fatalf("path gone after refusal: %v", err)
			}
			if after.Ino != before.Ino || after.Mode != before.Mode || after.Mtim != before.Mtim {
				t.Errorf("path changed: before %+v after %+v", before, after)
			}
		})
	}
}

func TestListenReplacesStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	if stale, err := Stale(path); err != nil || stale {
		t.Fatalf("Stale(missing) = %v, %v; want false", stale, err)
	}
	staleSocket(t, path)
	if alive, err := Alive(path); err != nil || alive {
		t.Fatalf("Alive(stale) = %v, %v; want false", alive, err)
	}
	if stale, err := Stale(path); err != nil || !stale {
		t.Fatalf("Stale(stale) = %v, %v; want true", stale, err)
	}
	l := mustListen(t, path, 0o600)
	if stale, err := Stale(path); err != nil || stale {
		t.Errorf("Stale(live) = %v, %v; want false", stale, err)
	}
	// The file at the path is now bound to the new listener (an inode
	// number proves nothing: the filesystem may reuse the stale one's).
	if ino, err := ListenerInode(path); err != nil || ino != sockInode(t, l) {
		t.Errorf("ListenerInode after replacing = %d, %v; want the new listener's %d", ino, err, sockInode(t, l))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	dial(t, path).Close()
	<-done
}

// TestRemoveStale: a stale socket is removed, a live one and a non-socket
// are left in place, a missing path or directory is fine; and a removal
// waits for a Listen in progress (which holds the directory lock between
// its own check and listen), so it never removes the fresh socket.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	staleSocket(t, path)
	if err := RemoveStale(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there: %v", err)
	}
	if err := RemoveStale(path); err != nil {
		t.Errorf("missing path: %v", err)
	}
	if err := RemoveStale(filepath.Join(dir, "nodir", "s.sock")); err != nil {
		t.Errorf("missing directory: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale(file); !errors.Is(err, ErrNotSocket) {
		t.Errorf("regular file: %v, want ErrNotSocket", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file removed: %v", err)
	}
	l := mustListen(t, path, 0o600)
	if err := RemoveStale(path); !errors.Is(err, ErrInUse) {
		t.Errorf("live socket: %v, want ErrInUse", err)
	}
	l.Close() // leaves the file (see Listen)
	if err := RemoveStale(path); err != nil {
		t.Fatalf("socket of a closed listener: %v", err)
	}

	// A Listen in progress: the lock is held while the stale socket is
	// replaced by a live one.
	staleSocket(t, path)
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- RemoveStale(path) }()
	time.Sleep(50 * time.Millisecond) // give an unlocked removal its chance
	if err := os.Remove(path); err != nil {
		t.Fatalf("the removal did not wait for the lock: %v", err)
	}
	l2, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	unlock()
	if err := <-res; !errors.Is(err, ErrInUse) {
		t.Errorf("removal after a Listen: %v, want ErrInUse", err)
	}
	if alive, err := Alive(path); err != nil || !alive {
		t.Errorf("the fresh socket: alive %v, %v; want true", alive, err)
	}
}

// TestListenConcurrent: launchers racing for one path. Exactly one wins,
// the others get ErrInUse, and the winner's socket is the one at the path.
func TestListenConcurrent(t *testing.T) {
	for round := 0; round < 20; round++ {
		path := filepath.Join(t.TempDir(), "s.sock")
		staleSocket(t, path) // every racer sees a stale socket first
		const n = 4
		type result struct {
			l   *net.UnixListener
			err error
		}
		results := make(chan result, n)
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			go func() {
				<-start
				l, err := Listen(path, 0o600)
				results <- result{l, err}
			}()
		}
		close(start)
		var winner *net.UnixListener
		for i := 0; i < n; i++ {
			r := <-results
			switch {
			case r.err == nil && winner == nil:
				winner = r.l
			case r.err == nil:
				r.l.Close()
				t.Fatalf("round %d: two Listen calls succeeded", round)
			case !errors.Is(r.err, ErrInUse):
				t.Fatalf("round %d: loser got %v, want ErrInUse", round, r.err)
			}
		}
		if winner == nil {
			t.Fatalf("round %d: nobody won", round)
		}
		if ino, err := ListenerInode(path); err != nil || ino != sockInode(t, winner) {
			t.Errorf("round %d: the socket at the path is not the winner's: %d, %v", round, ino, err)
		}
		winner.Close()
	}
}

// oneShotServer is a virtiofsd-like server: it accepts one connection and
// then stops. accepted counts the connections it saw.
type oneShotServer struct {
	l        *net.UnixListener
	mu       sync.Mutex
	accepted int
	done     chan struct{}
}

func startOneShot(t *testing.T, path string) *oneShotServer {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := &oneShotServer{l: l, done: make(chan struct{})}
	t.Cleanup(func() { l.Close(); <-s.done })
	return s
}

// pending reports whether a connection is waiting in the listen queue,
// without waiting: a unix connect(2) is queued before it returns.
func (s *oneShotServer) pending(t *testing.T) bool {
	t.Helper()
	f, err := s.l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The dup shares the open file description; make sure it does not
	// block (File's dup may have left it blocking).
	fd := int(f.Fd()) // Fd puts the description in blocking mode
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err == unix.EAGAIN {
		return false
	}
	if err != nil {
		t.Fatalf("accept4: %v", err)
	}
	unix.Close(nfd)
	return true
}

func (s *oneShotServer) serve() {
	defer close(s.done)
	c, err := s.l.Accept()
	if err != nil {
		return
	}
	s.mu.Lock()
	s.accepted++
	s.mu.Unlock()
	c.Write([]byte("v"))
	c.Close()
	s.l.Close() // one connection only, like virtiofsd
}

func TestListenRefusesLive(t *testing.T) {
	for _, src := range probeSources {
		t.Run(src.name, func(t *testing.T) {
			if src.name == "connect" {
				t.Skip("the connect fallback necessarily connects; covered by TestAliveSources")
			}
			src.use(t)
			path := filepath.Join(t.TempDir(), "s.sock")
			srv := startOneShot(t, path)
			checkNoFDLeak(t, func() {
				l, err := Listen(path, 0o600)
				if err == nil {
					l.Close()
					t.Fatal("Listen succeeded over a live socket")
				}
				if !errors.Is(err, ErrInUse) {
					t.Fatalf("error %v, want ErrInUse", err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the path", err)
				}
			})
			if alive, err := Alive(path); err != nil || !alive {
				t.Fatalf("Alive = %v, %v; want true", alive, err)
			}
			if srv.pending(t) {
				t.Fatal("the probe connected to the live server")
			}
			// Still serving: the one connection it allows is ours.
			go srv.serve()
			c := dial(t, path)
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatalf("live server no longer serves: %v", err)
			}
			c.Close()
			<-srv.done
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.accepted != 1 {
				t.Errorf("server accepted %d connections, want exactly ours", srv.accepted)
			}
		})
	}
}

// probeSources selects each way Alive can find listeners.
var probeSources = []struct {
	name string
	use  func(t *testing.T)
}{
	{"sock_diag", func(t *testing.T) {
		if _, err := diagListeners(); err != nil {
			t.Skipf("sock_diag unavailable: %v", err)
		}
	}},
	{"proc_net_unix", func(t *testing.T) {
		if _, err := os.Stat(procNetUnix); err != nil {
			t.Skipf("%s unavailable: %v", procNetUnix, err)
		}
		useSockDiag = false
		t.Cleanup(func() { useSockDiag = true })
	}},
	{"connect", func(t *testing.T) {
		useSockDiag = false
		old := procNetUnix
		procNetUnix = filepath.Join(t.TempDir(), "no-proc-net-unix")
		t.Cleanup(func() { useSockDiag = true; procNetUnix = old })
	}},
}

func TestAliveSources(t *testing.T) {
	type state struct {
		name  string
		setup func(t *testing.T, path string) // leaves path in the state
		alive bool
		err   error
	}
	states := []state{
		// Nothing at the path: not alive, no error.
		{"missing", func(t *testing.T, path string) {}, false, nil},
		// A socket file nobody listens on (crashed daemon): not alive.
		{"stale", staleSocket, false, nil},
		// A listening socket: alive.
		{"live", func(t *testing.T, path string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, true, nil},
		// A regular file: not alive, and the error says why.
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, ErrNotSocket},
	}
	for _, src := range probeSources {
		for _, st := range states {
			t.Run(src.name+"/"+st.name, func(t *testing.T) {
				src.use(t)
				path := filepath.Join(t.TempDir(), "s.sock")
				st.setup(t, path)
				alive, err := Alive(path)
				if alive != st.alive {
					t.Errorf("Alive = %v, want %v", alive, st.alive)
				}
				if st.err == nil && err != nil || st.err != nil && !errors.Is(err, st.err) {
					t.Errorf("Alive error %v, want %v", err, st.err)
				}
			})
		}
	}
}

// TestAliveReplacedFile: a listener still holds a socket file that was
// unlinked; a stale socket file now sits at the same path.
func TestAliveReplacedFile(t *testing.T) {
	cases := []struct {
		name  string
		src   int
		alive bool
	}{
		// sock_diag compares the file's identity: the listener holds the
		// old inode, so the file at the path is stale.
		{"sock_diag", 0, false},
		// /proc/net/unix only has the path string, so it errs towards
		// "alive" (a refusal to start, never a clobbered live socket).
		{"proc_net_unix", 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			probeSources[tc.src].use(t)
			path := filepath.Join(t.TempDir(), "s.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			defer l.Close()
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			staleSocket(t, path)
			if alive, err := Alive(path); err != nil || alive != tc.alive {
				t.Errorf("Alive = %v, %v; want %v", alive, err, tc.alive)
			}
		})
	}
}

// sockInode returns the sockfs inode of l's socket.
func sockInode(t *testing.T, l *net.UnixListener) uint64 {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// startChild re-executes the test binary in mode with l as fd 3, and
// closes the parent's copies after the start as a launcher does.
func startChild(t *testing.T, mode string, l *net.UnixListener) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	f, err := ListenerFile(l)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l.Close()
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, stdin, bufio.NewReader(stdout)
}

func TestFromFDInChild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l := mustListen(t, path, 0o600)
	cmd, _, _ := startChild(t, "serve-one", l)
	// The parent closed its copies: the file must still be there, and
	// the child answers.
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket file gone after the parent closed its listener: %v", err)
	}
	c := dial(t, path)
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	if line != "hello fd3closed=true\n" {
		t.Errorf("child said %q; FromFD must own and close fd 3", line)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
}

func TestListenerFileIsBlocking(t *testing.T) {
	l := mustListen(t, filepath.Join(t.TempDir(), "s.sock"), 0o600)
	checkNoFDLeak(t, func() {
		f, err := ListenerFile(l)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_NONBLOCK != 0 {
			t.Error("ListenerFile fd is non-blocking; a C daemon's accept(2) would fail with EAGAIN")
		}
	})
}

func TestListenerInodeAndHeldBy(t *testing.T) {
	for _, src := range probeSources[:2] {
		t.Run(src.name, func(t *testing.T) {
			src.use(t)
			path := filepath.Join(t.TempDir(), "s.sock")
			l := mustListen(t, path, 0o600)
			want := sockInode(t, l)
			got, err := ListenerInode(path)
			if err != nil || got != want {
				t.Fatalf("ListenerInode = %d, %v; want %d", got, err, want)
			}
			if held, err := HeldBy(os.Getpid(), path); err != nil || !held {
				t.Fatalf("HeldBy(self) before handing over = %v, %v; want true", held, err)
			}
			cmd, _, out := startChild(t, "hold", l)
			if line, err := out.ReadString('\n'); err != nil || line != "holding\n" {
				t.Fatalf("child: %q %v", line, err)
			}
			cases := []struct {
				name string
				pid  int
				held bool
			}{
				// The daemon holds the inherited listener.
				{"child", cmd.Process.Pid, true},
				// The launcher closed its copies after the start.
				{"parent after handover", os.Getpid(), false},
				// A PID that does not exist holds nothing.
				{"no such pid", 1 << 22, false},
			}
			for _, c := range cases {
				if held, err := HeldBy(c.pid, path); err != nil || held != c.held {
					t.Errorf("%s: HeldBy(%d) = %v, %v; want %v", c.name, c.pid, held, err, c.held)
				}
			}
			if got, err := ListenerInode(path); err != nil || got != want {
				t.Errorf("ListenerInode after handover = %d, %v; want %d", got, err, want)
			}
		})
	}
}

func TestListenerInodeErrors(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	staleSocket(t, stale)
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		want error
	}{
		// Nothing listens on a stale socket.
		{"stale", stale, ErrNoListener},
		// A missing path has no listener.
		{"missing", filepath.Join(dir, "none"), ErrNoListener},
		// A regular file is not a socket.
		{"regular", regular, ErrNotSocket},
	}
	for _, c := range cases {
		if _, err := ListenerInode(c.path); !errors.Is(err, c.want) {
			t.Errorf("%s: ListenerInode error %v, want %v", c.name, err, c.want)
		}
		if held, err := HeldBy(os.Getpid(), c.path); held || (c.want == ErrNotSocket) != (err != nil) {
			t.Errorf("%s: HeldBy = %v, %v", c.name, held, err)
		}
	}
	if _, err := HeldBy(0, stale); err == nil {
		t.Error("HeldBy(0) accepted PID 0")
	}
}

func TestRemove(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, dir string) string // returns the path to remove
		want   error
		gone   bool     // the path no longer exists afterwards
		intact []string // paths that must still exist
	}{
		// A socket file is removed.
		{"socket", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "s.sock")
			staleSocket(t, p)
			return p
		}, nil, true, nil},
		// Nothing there: success, idempotent.
		{"missing", func(t *testing.T, dir string) string { return filepath.Join(dir, "none") }, nil, true, nil},
		// Missing directory: success.
		{"missing dir", func(t *testing.T, dir string) string { return filepath.Join(dir, "no", "s.sock") }, nil, true, nil},
		// A regular file is refused and kept.
		{"regular file", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, ErrNotSocket, false, nil},
		// A directory is refused and kept.
		{"directory", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "d")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, ErrNotSocket, false, nil},
		// A symlink to a socket is not followed: link and socket stay.
		{"symlink to socket", func(t *testing.T, dir string) string {
			target := filepath.Join(dir, "target.sock")
			staleSocket(t, target)
			p := filepath.Join(dir, "link")
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			return p
		}, ErrNotSocket, false, []string{"target.sock"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.setup(t, dir)
			checkNoFDLeak(t, func() {
				err := Remove(path)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("Remove error %v, want %v", err, tc.want)
				}
			})
			_, err := os.Lstat(path)
			if gone := os.IsNotExist(err); gone != tc.gone {
				t.Errorf("path gone = %v, want %v", gone, tc.gone)
			}
			for _, p := range tc.intact {
				if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
					t.Errorf("%s was touched: %v", p, err)
				}
			}
		})
	}
}

func TestFromFDRejects(t *testing.T) {
	cases := []struct {
		name string
		file func(t *testing.T) *os.File
		want string // the child's verdict
	}{
		// A regular file is not a socket.
		{"regular file", func(t *testing.T) *os.File {
			f, err := os.CreateTemp(t.TempDir(), "f")
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, "not-listener"},
		// A connected (not listening) unix stream socket.
		{"unix stream not listening", func(t *testing.T) *os.File {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[1])
			return os.NewFile(uintptr(fds[0]), "pair")
		}, "not-listener"},
		// A unix datagram socket.
		{"unix datagram", func(t *testing.T) *os.File {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			return os.NewFile(uintptr(fd), "dgram")
		}, "not-listener"},
		// A listening TCP socket is the wrong address family.
		{"tcp listener", func(t *testing.T) *os.File {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Skipf("no loopback TCP: %v", err)
			}
			defer l.Close()
			f, err := l.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, "not-listener"},
		// A listening unix socket: accepted (the control row).
		{"unix listener", func(t *testing.T) *os.File {
			l := mustListen(t, filepath.Join(t.TempDir(), "s.sock"), 0o600)
			f, err := ListenerFile(l)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, "ok"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.file(t)
			defer f.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=fromfd-error")
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v", err)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("FromFD verdict %q, want %q", got, tc.want)
			}
		})
	}
}

// TestFromFDLeavesFDOnError checks in-process that a rejected fd stays
// open and that a bad fd number gives an error.
func TestFromFDLeavesFDOnError(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkNoFDLeak(t, func() {
		if _, err := FromFD(f.Fd(), "temp file"); !errors.Is(err, ErrNotListener) {
			t.Fatalf("FromFD(regular file) = %v, want ErrNotListener", err)
		}
	})
	if _, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("fd closed after a rejected FromFD: %v", err)
	}
	// An fd number that is not open.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	bad := r.Fd()
	r.Close()
	w.Close()
	if _, err := FromFD(bad, "closed fd"); err == nil || !errors.Is(err, syscall.EBADF) {
		t.Errorf("FromFD(closed fd) = %v, want EBADF", err)
	}
}

func TestPathLength(t *testing.T) {
	base := t.TempDir()
	pad := func(n int) string {
		// base + "/" + name of the right length
		name := strings.Repeat("x", n-len(base)-1)
		return filepath.Join(base, name)
	}
	if len(base) > MaxPathLen-10 {
		t.Skipf("temp dir %s too long for this test", base)
	}
	cases := []struct {
		name string
		path string
		ok   bool
	}{
		// Exactly 107 bytes fits sun_path with its NUL.
		{"107 bytes", pad(MaxPathLen), true},
		// 108 bytes does not.
		{"108 bytes", pad(MaxPathLen + 1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Listen(tc.path, 0o600)
			if tc.ok {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				l.Close()
				return
			}
			if !errors.Is(err, ErrPathTooLong) {
				t.Fatalf("Listen error %v, want ErrPathTooLong", err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

func TestListenBadArguments(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		mode os.FileMode
	}{
		// An empty path.
		{"empty", "", 0o600},
		// A NUL inside the path would be cut by the kernel.
		{"nul", filepath.Join(dir, "a\x00b"), 0o600},
		// Setuid and other non-permission bits are refused.
		{"setuid mode", filepath.Join(dir, "s.sock"), 0o4600},
		// The parent is a regular file.
		{"parent not a directory", filepath.Join(notDir, "s.sock"), 0o600},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkNoFDLeak(t, func() {
				l, err := Listen(tc.path, tc.mode)
				if err == nil {
					l.Close()
					t.Fatal("Listen succeeded")
				}
			})
		})
	}
}

// TestVirtiofsdNotKilledByProbe runs QEMU's virtiofsd, the single-connection
// daemon the probe must not connect to, and shows what a connection does to
// it.
func TestVirtiofsdNotKilledByProbe(t *testing.T) {
	const bin = "/usr/lib/qemu/virtiofsd"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("virtiofsd not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd needs root")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "vfs.sock")
	cmd := exec.Command(bin, "--socket-path="+path, "-o", "source="+dir, "-o", "sandbox=chroot")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		r := false
		for sc.Scan() {
			if !r && strings.Contains(sc.Text(), "Waiting for vhost-user socket connection") {
				r = true
				ready <- true
			}
		}
		if !r {
			ready <- false
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
		}
	})
	if !<-ready {
		t.Fatal("virtiofsd never became ready")
	}
	for _, src := range probeSources[:2] {
		src.use(t)
		if alive, err := Alive(path); err != nil || !alive {
			t.Errorf("%s: Alive(virtiofsd) = %v, %v; want true", src.name, alive, err)
		}
		if _, err := Listen(path, 0o600); !errors.Is(err, ErrInUse) {
			t.Errorf("%s: Listen over virtiofsd = %v, want ErrInUse", src.name, err)
		}
		if held, err := HeldBy(cmd.Process.Pid, path); err != nil || !held {
			t.Errorf("%s: HeldBy(virtiofsd) = %v, %v; want true", src.name, held, err)
		}
		useSockDiag = true
	}
	// virtiofsd must still be there: one connection is all it serves, and
	// hanging up makes it exit. That is why Alive must not connect.
	c := dial(t, path)
	c.Close()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("virtiofsd did not exit after its one connection closed")
	}
}
