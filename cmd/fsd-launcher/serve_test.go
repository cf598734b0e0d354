package main

import (
	"bufio"
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

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
)

// daemonProc is a running `fsd-launcher serve`.
type daemonProc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     strings.Builder // stderr so far
	readyCh chan string     // the readiness line, once
	eof     chan struct{}   // closed when stderr ends
	ready   string
}

// startServe runs bin serve args (with extra files as fd 3, 4, ...) and
// waits for the readiness line.
func startServe(t *testing.T, bin string, extra []*os.File, sysattr *syscall.SysProcAttr, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{readyCh: make(chan string, 1), eof: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
	d.cmd.ExtraFiles = extra
	d.cmd.SysProcAttr = sysattr
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.eof)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			d.mu.Lock()
			d.out.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if !sent && strings.Contains(sc.Text(), fsd.ReadyLine) {
				d.readyCh <- sc.Text()
				sent = true
			}
		}
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			d.wait(t)
		}
	})
	select {
	case d.ready = <-d.readyCh:
		return d
	case <-d.eof:
		d.wait(t)
		t.Fatalf("serve exited before %q:\n%s", fsd.ReadyLine, d.output())
	case <-time.After(generous):
		t.Fatalf("no %q after %v:\n%s", fsd.ReadyLine, generous, d.output())
	}
	return nil
}

// output is everything the daemon wrote on stderr so far.
func (d *daemonProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// wait reads stderr to its end, waits for the process and returns its exit
// code.
func (d *daemonProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-d.eof:
	case <-time.After(generous):
		_ = d.cmd.Process.Kill()
		<-d.eof
		t.Errorf("serve did not exit")
	}
	_ = d.cmd.Wait()
	return d.cmd.ProcessState.ExitCode()
}

func dialP9(t *testing.T, sock string) *p9.Client {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p9.NewClient(conn, p9.WithMessageSize(64<<10))
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// markedDir makes a directory holding a file "marker" that names it.
func markedDir(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readMarker attaches to aname and reads its marker file.
func readMarker(c *p9.Client, aname string) (string, error) {
	root, err := c.Attach(aname)
	if err != nil {
		return "", err
	}
	defer root.Close()
	_, f, err := root.Walk([]string{"marker"})
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	return string(buf[:n]), nil
}

// checkServes proves aname routing and concurrent connections on sock, with
// exports root, "data" and "ro" (read-only).
func checkServes(t *testing.T, sock string) {
	t.Helper()
	a, b := dialP9(t, sock), dialP9(t, sock)
	for _, tc := range []struct {
		c     *p9.Client
		aname string
		want  string
		err   error
	}{
		{a, "", "root", nil},            // "" is the root export
		{b, "/", "root", nil},           // so is "/"
		{a, "data", "data", nil},        // a tag is its mount
		{b, "ro", "ro", nil},            // read-only mounts read
		{a, "marker", "", linux.ENOENT}, // a root file is no aname
		{b, "other", "", linux.ENOENT},  // unknown tags do not exist
	} {
		if got, err := readMarker(tc.c, tc.aname); got != tc.want || err != tc.err {
			t.Errorf("aname %q: %q, %v; want %q, %v", tc.aname, got, err, tc.want, tc.err)
		}
	}
	ro, err := b.Attach("ro")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Mkdir("x", 0o755, 0, 0); err != linux.EROFS {
		t.Errorf("mkdir in the read-only mount: %v, want EROFS", err)
	}
	// A connection closing does not stop the daemon.
	a.Close()
	if got, err := readMarker(b, "data"); err != nil || got != "data" {
		t.Errorf("after a connection closed: %q, %v", got, err)
	}
	if got, err := readMarker(dialP9(t, sock), ""); err != nil || got != "root" {
		t.Errorf("a new connection: %q, %v", got, err)
	}
}

// TestServeSocketPath runs `serve --socket-path` as a real process: the
// readiness line, two connections at once, aname routing, a connection
// closing, and SIGTERM: exit 0 with the socket removed.
func TestServeSocketPath(t *testing.T) {
	root, data, ro := markedDir(t, "root"), markedDir(t, "data"), markedDir(t, "ro")
	sock := filepath.Join(shortTempDir(t), "fsd.sock")
	d := startServe(t, binary, nil, nil, "--socket-path", sock, "--shared-dir", root,
		"--mount", "tag=data,source="+data, "--mount", "tag=ro,source="+ro+",ro",
		"--sandbox", "none", "--log-level", "debug", "--max-connections", "8")
	want := fmt.Sprintf("%s pid=%d exports=/:%s,data:%s,ro:%s[ro]", fsd.ReadyLine, d.cmd.Process.Pid, root, data, ro)
	if d.ready != want {
		t.Errorf("readiness line %q, want %q", d.ready, want)
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v: want a 0600 socket", st.Mode(), err)
	}
	checkServes(t, sock)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, d.output())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestServeNoSetuid: with --no-setuid no mode the guest sets keeps setuid
// or setgid on a file, in the root export and in a mount; a directory keeps
// setgid. The frames are written with fsd/proto: p9's client masks modes
// to 0777 and could not ask for setuid. Without the flag hostfs keeps
// modes exactly (hostfs's TestNoSetuid and the conformance suite's modes
// cases).
func TestServeNoSetuid(t *testing.T) {
	root, data := markedDir(t, "root"), markedDir(t, "data")
	sock := filepath.Join(shortTempDir(t), "fsd.sock")
	d := startServe(t, binary, nil, nil, "--socket-path", sock, "--shared-dir", root,
		"--mount", "tag=data,source="+data, "--sandbox", "none", "--no-setuid")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(m proto.Message) {
		t.Helper()
		b, err := proto.Append(nil, 1, m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, uint32(hdr[0])|uint32(hdr[1])<<8|uint32(hdr[2])<<16|uint32(hdr[3])<<24)
		copy(frame, hdr)
		if _, err := io.ReadFull(conn, frame[4:]); err != nil {
			t.Fatal(err)
		}
		_, r, err := proto.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := r.(*proto.Rlerror); ok {
			t.Fatalf("%T: errno %d", m, e.Ecode)
		}
	}
	call(&proto.Tversion{Msize: 65536, Version: "9P2000.L"})
	for i, export := range []struct{ aname, dir string }{{"", root}, {"data", data}} {
		fid := proto.FID(10 * (i + 1))
		call(&proto.Tattach{FID: fid, Afid: proto.NoFID, Aname: export.aname, NUname: 0})
		call(&proto.Twalk{FID: fid, NewFID: fid + 1})
		call(&proto.Tlcreate{FID: fid + 1, Name: "prog", Flags: p9.WriteOnly, Mode: 0o6755})
		call(&proto.Tmkdir{DirFID: fid, Name: "dir", Mode: 0o6755})
		call(&proto.Twalk{FID: fid, NewFID: fid + 2, Names: []string{"dir"}})
		call(&proto.Tsetattr{FID: fid + 2, Valid: p9.SetAttrMask{Permissions: true}, Attr: p9.SetAttr{Permissions: 0o6777}})
		for name, want := range map[string]os.FileMode{"prog": 0o755, "dir": os.ModeDir | os.ModeSetgid | 0o777} {
			st, err := os.Lstat(filepath.Join(export.dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Mode() & (os.ModeType | os.ModeSetuid | os.ModeSetgid | os.ModeSticky | os.ModePerm); got != want {
				t.Errorf("export %q: %s has mode %v, want %v", export.aname, name, got, want)
			}
		}
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, d.output())
	}
}

// TestServeFD runs `serve --fd 3` on a listener pre-opened by the test, as
// the launcher does; SIGINT stops it with exit 0 and the socket, which is
// the launcher's, stays.
func TestServeFD(t *testing.T) {
	root, data, ro := markedDir(t, "root"), markedDir(t, "data"), markedDir(t, "ro")
	sock := filepath.Join(shortTempDir(t), "fsd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	lf, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	d := startServe(t, binary, []*os.File{lf}, nil, "--fd", "3", "--shared-dir", root,
		"--mount", "tag=data,source="+data, "--mount", "tag=ro,source="+ro+",ro", "--sandbox", "none")
	lf.Close()
	checkServes(t, sock)
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0:\n%s", code, d.output())
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the launcher's socket was removed: %v", err)
	}
}

// TestServeSandboxed runs the daemon as the launcher does when root: a
// CGO_ENABLED=0 binary in a mount namespace of its own, with the default
// (strongest) sandbox, a mount outside the root export, and --socket-path,
// whose file must still be removed on SIGTERM although the daemon's root
// is then the export.
func TestServeSandboxed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sandbox pivots into the export")
	}
	if testing.Short() {
		t.Skip("-short: builds a static binary")
	}
	bin := filepath.Join(t.TempDir(), "fsd-launcher")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	root, data, ro := markedDir(t, "root"), markedDir(t, "data"), markedDir(t, "ro")
	sock := filepath.Join(shortTempDir(t), "fsd.sock")
	d := startServe(t, bin, nil, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL},
		"--socket-path", sock, "--shared-dir", root,
		"--mount", "tag=data,source="+data, "--mount", "tag=ro,source="+ro+",ro", "--log-level", "info")
	if !strings.Contains(d.output(), "sandbox applied") {
		t.Errorf("no sandbox was applied:\n%s", d.output())
	}
	checkServes(t, sock)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, d.output())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind by the sandboxed daemon: %v", err)
	}
}

// TestServeUsage is the table of bad invocations: each exits 2 and its
// message names the flag at fault.
func TestServeUsage(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(shortTempDir(t), "s")
	base := []string{"--socket-path", sock, "--shared-dir", dir}
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		// Where to listen is required, and only one place.
		{"no listener", []string{"--shared-dir", dir}, "--fd or --socket-path"},
		{"both listeners", append([]string{"--fd", "3"}, base...), "exclusive"},
		// --fd is an inherited descriptor, never stdio.
		{"fd 1", []string{"--fd", "1", "--shared-dir", dir}, "--fd 1"},
		{"fd not a number", []string{"--fd", "x", "--shared-dir", dir}, "-fd"},
		// The root export is required.
		{"no shared dir", []string{"--socket-path", sock}, "--shared-dir"},
		// --mount syntax: tag and source required, known keys only.
		{"mount without tag", append(base, "--mount", "source="+dir), "tag and source"},
		{"mount unknown key", append(base, "--mount", "tag=a,source="+dir+",rw"), `unexpected "rw"`},
		{"mount tag /", append(base, "--mount", "tag=/,source="+dir), "root export"},
		{"mount tag with a control character", append(base, "--mount", "tag=a\tb,source="+dir), "control character"},
		{"mount tag twice", append(base, "--mount", "tag=a,source="+dir, "--mount", "tag=a,source="+dir), "already used"},
		// Closed sets.
		{"log level", append(base, "--log-level", "loud"), "--log-level"},
		{"log format", append(base, "--log-format", "xml"), "--log-format"},
		{"sandbox", append(base, "--sandbox", "jail"), "--sandbox"},
		// Limits.
		{"msize too small", append(base, "--max-msize", "100"), "--max-msize"},
		{"msize too large", append(base, "--max-msize", "1073741824"), "--max-msize"},
		{"zero fids", append(base, "--max-fids", "0"), "--max-fids"},
		{"negative connections", append(base, "--max-connections", "-1"), "--max-connections"},
		{"inflight past tags", append(base, "--max-inflight", "70000"), "--max-inflight"},
		// Busy polling: 0 (off) to 1ms.
		{"busy poll too long", append(base, "--busy-poll", "5ms"), "--busy-poll 5ms"},
		{"busy poll negative", append(base, "--busy-poll", "-1us"), "--busy-poll -1µs"},
		{"busy poll not a duration", append(base, "--busy-poll", "50"), "-busy-poll"},
		// Gofer mode does not mix with a listener.
		{"bundle with fd", []string{"--bundle", dir, "--io-fds", "3", "--fd", "3"}, "--fd cannot be used with --bundle"},
		// No positional arguments.
		{"stray argument", append(base, "extra"), `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cli(t, append([]string{"serve"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d naming %q", code, stderr, exitUsage, tc.want)
			}
			// A launcher reads this stderr for the ready line.
			if strings.Contains(stderr, fsd.ReadyLine) {
				t.Fatalf("a usage error prints the readiness line's text:\n%s", stderr)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Fatalf("a socket was created on a usage error")
			}
		})
	}
}

// TestServeHelp proves --help prints the usage with every flag on stdout
// and exits 0.
func TestServeHelp(t *testing.T) {
	stdout, _, code := cli(t, "serve", "--help")
	if code != exitOK {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{"Usage: fsd-launcher serve", "fsd: ready", "-fd", "-socket-path", "-shared-dir",
		"-readonly", "-mount", "-log-level", "-log-format", "-sandbox", "-max-connections", "-max-fids",
		"-max-inflight", "-max-msize", "-bundle", "-io-fds", "Exit codes"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--help does not mention %q:\n%s", want, stdout)
		}
	}
}

// TestServeFailures are runtime failures: exit 1, the message says what.
func TestServeFailures(t *testing.T) {
	dir := t.TempDir()
	busy := filepath.Join(shortTempDir(t), "busy.sock")
	l, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		args []string
		want string
	}{
		// The root export does not exist.
		{"missing shared dir", []string{"--socket-path", filepath.Join(shortTempDir(t), "s"), "--shared-dir", missing, "--sandbox", "none"}, "missing"},
		// A mount source does not exist.
		{"missing mount", []string{"--socket-path", filepath.Join(shortTempDir(t), "s"), "--shared-dir", dir, "--mount", "tag=m,source=" + missing, "--sandbox", "none"}, "missing"},
		// Another daemon listens on the socket path.
		{"socket in use", []string{"--socket-path", busy, "--shared-dir", dir, "--sandbox", "none"}, "in use"},
		// --fd 7 is not open.
		{"fd not open", []string{"--fd", "7", "--shared-dir", dir, "--sandbox", "none"}, "fd 7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cli(t, append([]string{"serve"}, tc.args...)...)
			if code != exitFailure || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, fsd.ReadyLine) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d naming %q, not ready", code, stderr, exitFailure, tc.want)
			}
		})
	}
	// The live listener's socket was left alone.
	if c, err := net.Dial("unix", busy); err != nil {
		t.Fatalf("the busy socket was disturbed: %v", err)
	} else {
		c.Close()
	}
}

// TestBusyPollBounds: the configuration accepts exactly what the daemon
// does (config cannot import the server).
func TestBusyPollBounds(t *testing.T) {
	if config.MaxBusyPoll != server.MaxBusyPoll {
		t.Errorf("config.MaxBusyPoll %v, server.MaxBusyPoll %v", config.MaxBusyPoll, server.MaxBusyPoll)
	}
}
