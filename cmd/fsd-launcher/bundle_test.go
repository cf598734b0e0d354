package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/oci"
)

// bundleWait bounds waits that should end quickly; it only keeps a broken
// test from hanging.
const bundleWait = 30 * time.Second

// testBundle writes a bundle: rootfs/, a read-write bind of "data" on
// /data, a read-only bind of "conf" on /etc/conf, a proc and a tmpfs mount
// (not served). Each directory holds a file "marker" naming it.
func testBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"rootfs", "data", "conf"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "marker"), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[
		{"destination":"/proc","type":"proc","source":"proc"},
		{"destination":"/data","type":"bind","source":"data","options":["rbind","rw"]},
		{"destination":"/tmp","type":"tmpfs","source":"tmpfs"},
		{"destination":"/etc/conf","type":"none","source":"conf","options":["bind","ro"]}]}`
	if err := os.WriteFile(filepath.Join(dir, oci.ConfigName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// goferProc is a running `serve --bundle --io-fds` process.
type goferProc struct {
	cmd     *exec.Cmd
	sandbox []*os.File
	lines   chan string // stderr, line by line; closed at EOF
	stderr  strings.Builder
}

// startGofer starts bin serve --bundle dir --io-fds 3,... with n socket
// pairs (the gofer ends as fd 3, 4, ...), plus extra arguments. As root it
// starts the daemon in a mount namespace of its own, as the launcher does,
// so the namespace sandbox is what runs.
func startGofer(t *testing.T, bin, dir string, n int, extra ...string) *goferProc {
	t.Helper()
	g := &goferProc{lines: make(chan string, 256)}
	var goferEnds []*os.File
	var fds []string
	for i := 0; i < n; i++ {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		g.sandbox = append(g.sandbox, os.NewFile(uintptr(p[0]), "sandbox end"))
		goferEnds = append(goferEnds, os.NewFile(uintptr(p[1]), "gofer end"))
		fds = append(fds, fmt.Sprint(3+i))
	}
	args := append([]string{"serve", "--bundle", dir, "--io-fds", strings.Join(fds, ",")}, extra...)
	g.cmd = exec.Command(bin, args...)
	g.cmd.ExtraFiles = goferEnds
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		g.cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS
	}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range goferEnds {
		f.Close()
	}
	go func() {
		defer close(g.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			g.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		for _, f := range g.sandbox {
			f.Close()
		}
		if g.cmd.ProcessState == nil {
			_ = g.cmd.Process.Kill()
			_ = g.cmd.Wait()
		}
	})
	return g
}

// waitReady reads stderr until the readiness line.
func (g *goferProc) waitReady(t *testing.T) {
	t.Helper()
	timeout := time.After(bundleWait)
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				t.Fatalf("stderr closed before %q:\n%s", fsd.ReadyLine, g.stderr.String())
			}
			g.stderr.WriteString(l + "\n")
			if strings.Contains(l, fsd.ReadyLine) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q after %v:\n%s", fsd.ReadyLine, bundleWait, g.stderr.String())
		}
	}
}

// wait drains stderr and returns the exit status.
func (g *goferProc) wait(t *testing.T) int {
	t.Helper()
	timeout := time.After(bundleWait)
	for done := false; !done; {
		select {
		case l, ok := <-g.lines:
			if !ok {
				done = true
				break
			}
			g.stderr.WriteString(l + "\n")
		case <-timeout:
			t.Fatalf("gofer still running after %v:\n%s", bundleWait, g.stderr.String())
		}
	}
	err := g.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// client makes a 9P client of sandbox end i, which it takes over.
func (g *goferProc) client(t *testing.T, i int) *p9.Client {
	t.Helper()
	c, err := net.FileConn(g.sandbox[i])
	if err != nil {
		t.Fatal(err)
	}
	// The connection holds its own descriptor: closing the client must
	// close the socket.
	g.sandbox[i].Close()
	cl, err := p9.NewClient(c)
	if err != nil {
		c.Close()
		t.Fatalf("9P client on end %d: %v", i, err)
	}
	return cl
}

// marker reads the file "marker" at the root of f.
func marker(t *testing.T, root p9.File) string {
	t.Helper()
	_, f, err := root.Walk([]string{"marker"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// TestServeBundleIOFDs runs the real binary in gofer mode over socket
// pairs, with p9's client on the sandbox ends.
func TestServeBundleIOFDs(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fsd-launcher")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	t.Run("serves each export on its fd, exits 0 when all close", func(t *testing.T) {
		dir := testBundle(t)
		g := startGofer(t, bin, dir, 3)
		g.waitReady(t)
		exports := []struct {
			tag, marker string
			ro          bool
		}{{"/", "rootfs", false}, {"/data", "data", false}, {"/etc/conf", "conf", true}}
		for i, e := range exports {
			cl := g.client(t, i)
			// "", "/" and the export's tag attach this fd's export.
			for _, aname := range []string{"", "/", e.tag} {
				root, err := cl.Attach(aname)
				if err != nil {
					t.Fatalf("fd %d attach %q: %v", i, aname, err)
				}
				if got := marker(t, root); got != e.marker {
					t.Errorf("fd %d attach %q serves %q, want %q", i, aname, got, e.marker)
				}
				root.Close()
			}
			// Another export's tag is not served on this fd.
			other := exports[1+i%2].tag
			if other != e.tag {
				if _, err := cl.Attach(other); !errors.Is(err, linux.ENOENT) {
					t.Errorf("fd %d attach %q: %v, want ENOENT", i, other, err)
				}
			}
			root, err := cl.Attach("")
			if err != nil {
				t.Fatal(err)
			}
			_, d, err := root.Walk(nil)
			if err != nil {
				t.Fatal(err)
			}
			f, _, _, err := d.Create("hello", p9.WriteOnly, 0o640, p9.NoUID, p9.NoGID)
			switch {
			case e.ro:
				if !errors.Is(err, linux.EROFS) {
					t.Errorf("create on read-only %s: %v, want EROFS", e.tag, err)
				}
			case err != nil:
				t.Errorf("create on %s: %v", e.tag, err)
			default:
				if _, err := f.WriteAt([]byte("hi "+e.tag), 0); err != nil {
					t.Errorf("write on %s: %v", e.tag, err)
				}
				f.Close()
				if b, err := os.ReadFile(filepath.Join(dir, e.marker, "hello")); err != nil || string(b) != "hi "+e.tag {
					t.Errorf("host sees %q, %v", b, err)
				}
			}
			d.Close()
			root.Close()
			cl.Close()
		}
		if code := g.wait(t); code != 0 {
			t.Errorf("exit %d after every connection closed, want 0:\n%s", code, g.stderr.String())
		}
	})

	t.Run("SIGTERM exits 0", func(t *testing.T) {
		g := startGofer(t, bin, testBundle(t), 3)
		g.waitReady(t)
		cl := g.client(t, 0)
		defer cl.Close()
		if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := g.wait(t); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0:\n%s", code, g.stderr.String())
		}
	})

	t.Run("count mismatch names both counts", func(t *testing.T) {
		for _, n := range []int{2, 4} {
			g := startGofer(t, bin, testBundle(t), n)
			if code := g.wait(t); code != exitFailure {
				t.Errorf("%d fds for 3 exports: exit %d, want %d", n, code, exitFailure)
			}
			want := fmt.Sprintf("3 exports (the root and 2 bind mounts) but %d io fds", n)
			if !strings.Contains(g.stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, g.stderr.String())
			}
			if strings.Contains(g.stderr.String(), fsd.ReadyLine) {
				t.Error("ready line printed on a count mismatch")
			}
		}
	})

	t.Run("bad flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"serve", "--bundle", testBundle(t), "--io-fds", "1"}, exitUsage},   // stdout is no io fd
			{[]string{"serve", "--bundle", testBundle(t), "--io-fds", "3,x"}, exitUsage}, // not a number
			{[]string{"serve", "--io-fds", "3"}, exitUsage},                              // --io-fds without --bundle
			{[]string{"serve", "--bundle", testBundle(t), "--io-fds", "9"}, exitFailure}, // fd 9 is not open
		} {
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Errorf("%q: %v, want exit %d\n%s", tc.args, err, tc.code, out)
			}
		}
	})

	t.Run("bundle without config.json", func(t *testing.T) {
		g := startGofer(t, bin, t.TempDir(), 1)
		if code := g.wait(t); code != exitFailure {
			t.Errorf("exit %d, want %d", code, exitFailure)
		}
		if !strings.Contains(g.stderr.String(), oci.ConfigName) {
			t.Errorf("stderr does not name %s:\n%s", oci.ConfigName, g.stderr.String())
		}
	})
}

func TestBundleConfig(t *testing.T) {
	dir := testBundle(t)
	sock := filepath.Join(t.TempDir(), "fsd.sock")
	want := []config.Mount{
		{Tag: "/data", Source: filepath.Join(dir, "data")},
		{Tag: "/etc/conf", Source: filepath.Join(dir, "conf"), ReadOnly: true},
	}
	check := func(t *testing.T, cfg *config.Config, socket string) {
		t.Helper()
		if cfg.SharedDir != filepath.Join(dir, "rootfs") || cfg.ReadOnly || cfg.SocketPath != socket {
			t.Errorf("shared_dir %q readonly %v socket %q", cfg.SharedDir, cfg.ReadOnly, cfg.SocketPath)
		}
		if fmt.Sprint(cfg.Mounts) != fmt.Sprint(want) {
			t.Errorf("mounts %+v, want %+v", cfg.Mounts, want)
		}
	}

	t.Run("socket only", func(t *testing.T) {
		// Without --config: the defaults, the bundle's exports, --socket.
		cfg, unserved, err := bundleConfig(dir, sock, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, sock)
		if len(unserved) != 2 {
			t.Errorf("unserved %+v, want proc and tmpfs", unserved)
		}
	})

	t.Run("config keys apply, bundle decides exports", func(t *testing.T) {
		base := config.Default(t.TempDir(), filepath.Join(t.TempDir(), "base.sock"))
		base.ReadOnly = true
		base.Mounts = []config.Mount{{Tag: "other", Source: t.TempDir()}}
		base.Limits.MaxFids = 77
		base.Log.Level = "debug"
		cfg, _, err := bundleConfig(dir, "", base)
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, base.SocketPath)
		if cfg.Limits.MaxFids != 77 || cfg.Log.Level != "debug" {
			t.Errorf("keys of --config lost: %+v %+v", cfg.Limits, cfg.Log)
		}
		// --socket overrides socket_path; base is not modified.
		cfg, _, err = bundleConfig(dir, sock, base)
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, sock)
		if base.SocketPath == sock || len(base.Mounts) != 1 || !base.ReadOnly {
			t.Error("bundleConfig modified its base")
		}
	})

	t.Run("no socket", func(t *testing.T) {
		if _, _, err := bundleConfig(dir, "", nil); err == nil {
			t.Error("no --socket and no --config accepted")
		}
	})

	t.Run("bad bundle", func(t *testing.T) {
		_, _, err := bundleConfig(t.TempDir(), sock, nil)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bundle without config.json: %v", err)
		}
	})
}

// TestStartBundle starts the real binary with `start --bundle DIR --socket
// PATH` and attaches each export through the socket by its destination.
func TestStartBundle(t *testing.T) {
	dir := testBundle(t)
	sock := filepath.Join(shortTempDir(t), "fsd.sock")
	out, stderr, code := cli(t, "start", "--bundle", dir, "--socket", sock)
	if code != 0 {
		t.Fatalf("start --bundle: exit %d\n%s", code, stderr)
	}
	var sd struct {
		PID    int    `json:"pid"`
		Socket string `json:"socket"`
	}
	if err := json.Unmarshal([]byte(out), &sd); err != nil || sd.Socket != sock {
		t.Fatalf("start printed %q (%v)", out, err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if _, stderr, code := cli(t, "stop", "--pid", fmt.Sprint(sd.PID), "--socket", sock); code != 0 {
				t.Errorf("stop: exit %d\n%s", code, stderr)
			}
		}
	}
	t.Cleanup(stop)
	// The mounts that are not served are logged.
	for _, d := range []string{"destination=/proc", "destination=/tmp"} {
		if !strings.Contains(stderr, d) {
			t.Errorf("start did not log the unserved mount %s:\n%s", d, stderr)
		}
	}

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p9.NewClient(conn)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	defer cl.Close()
	for i, tc := range []struct {
		aname, marker string
		ro            bool
	}{
		{"", "rootfs", false},       // the root, by the empty aname
		{"/", "rootfs", false},      // the root, by "/"
		{"/data", "data", false},    // a bind mount, by its destination
		{"/etc/conf", "conf", true}, // a read-only bind mount
	} {
		root, err := cl.Attach(tc.aname)
		if err != nil {
			t.Fatalf("attach %q: %v", tc.aname, err)
		}
		if got := marker(t, root); got != tc.marker {
			t.Errorf("attach %q serves %q, want %q", tc.aname, got, tc.marker)
		}
		_, d, err := root.Walk(nil)
		if err != nil {
			t.Fatal(err)
		}
		f, _, _, err := d.Create(fmt.Sprintf("via-socket-%d", i), p9.WriteOnly, 0o600, p9.NoUID, p9.NoGID)
		if tc.ro != errors.Is(err, linux.EROFS) || !tc.ro && err != nil {
			t.Errorf("create through %q: %v (read-only %v)", tc.aname, err, tc.ro)
		}
		if f != nil {
			f.Close()
		}
		d.Close()
		root.Close()
	}
	for _, aname := range []string{
		"/proc",  // a mount that is not served
		"/tmp",   // nor a tmpfs
		"data",   // anames match exactly: no relative form
		"/etc",   // nor a prefix of a destination
		"/data/", // nor an uncleaned one
	} {
		if f, err := cl.Attach(aname); !errors.Is(err, linux.ENOENT) {
			if f != nil {
				f.Close()
			}
			t.Errorf("attach %q: %v, want ENOENT", aname, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "via-socket-2")); err != nil {
		t.Errorf("file created through /data: %v", err)
	}
	stop()
}
