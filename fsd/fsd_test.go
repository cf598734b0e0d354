package fsd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// timeout only keeps a broken test from hanging.
const timeout = 20 * time.Second

// lines collects what Serve writes to Options.Ready.
type lines chan string

func (l lines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// daemon is Serve running in this process.
type daemon struct {
	addr    string
	ready   string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func listenUnix(t *testing.T) net.Listener {
	t.Helper()
	dir, err := os.MkdirTemp("", "fsd-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// start runs Serve with opts (Listener, Ready and Sandbox "none" filled in)
// and waits for the readiness line.
func start(t *testing.T, opts Options) *daemon {
	t.Helper()
	l := listenUnix(t)
	ready := make(lines, 1)
	opts.Listener, opts.Ready, opts.Sandbox = l, ready, "none"
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{addr: l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- Serve(ctx, opts) }()
	select {
	case d.ready = <-ready:
	case err := <-d.done:
		t.Fatalf("Serve returned before it was ready: %v", err)
	case <-time.After(timeout):
		t.Fatal("no readiness line")
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop cancels Serve and checks it returns nil; later calls do nothing.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if d.stopped {
		return
	}
	d.stopped = true
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(timeout):
		t.Error("Serve did not return after cancel")
	}
}

func client(t *testing.T, addr string) *p9.Client {
	t.Helper()
	conn, err := net.Dial("unix", addr)
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

// exportDir makes a directory holding a file "marker" that names it.
func exportDir(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// marker attaches to aname and reads its marker file.
func marker(t *testing.T, c *p9.Client, aname string) (string, error) {
	t.Helper()
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

// TestServeRoutesAndServes proves the readiness line, aname routing ("" and
// "/" the root, a tag its mount, anything else ENOENT), read-only mounts,
// several connections at once, and that a connection closing does not stop
// the daemon.
func TestServeRoutesAndServes(t *testing.T) {
	root, data, ro := exportDir(t, "root"), exportDir(t, "data"), exportDir(t, "ro")
	d := start(t, Options{Exports: []Export{
		{Tag: "data", Source: data},
		{Source: root},
		{Tag: "ro", Source: ro, ReadOnly: true},
		{Tag: "/srv/bind", Source: data}, // an OCI bind mount's destination
	}})
	want := fmt.Sprintf("%s pid=%d exports=/:%s,data:%s,ro:%s[ro],/srv/bind:%s\n", ReadyLine, os.Getpid(), root, data, ro, data)
	if d.ready != want {
		t.Fatalf("readiness line %q, want %q", d.ready, want)
	}

	a, b := client(t, d.addr), client(t, d.addr)
	tests := []struct {
		aname string
		want  string
		err   error
	}{
		{"", "root", nil},                 // the empty aname is the root export
		{"/", "root", nil},                // so is "/"
		{"data", "data", nil},             // a tag is its mount
		{"ro", "ro", nil},                 // read-only mounts are readable
		{"marker", "", linux.ENOENT},      // a file of the root is not an aname
		{"nope", "", linux.ENOENT},        // unknown tags do not exist
		{"/data", "", linux.ENOENT},       // anames are tags, not paths
		{"data/x", "", linux.ENOENT},      // nor paths below them
		{"../etc", "", linux.ENOENT},      // nor anything else
		{"DATA", "", linux.ENOENT},        // tags are case-sensitive
		{"ro\x00", "", linux.ENOENT},      // NUL does not truncate a tag
		{"root", "", linux.ENOENT},        // the root has no tag but "" and "/"
		{"data ", "", linux.ENOENT},       // no trimming
		{"/srv/bind", "data", nil},        // a tag may be a path (OCI destinations)
		{"/srv", "", linux.ENOENT},        // matched exactly: a prefix is not a tag
		{"/srv/bind/x", "", linux.ENOENT}, // nor a path below one
		{".", "", linux.ENOENT},           // no special names
		{"", "root", nil},                 // and the first connection still works
		{"data", "data", nil},             // after all of that
	}
	for i, tc := range tests {
		c := a
		if i%2 == 1 {
			c = b
		}
		got, err := marker(t, c, tc.aname)
		if got != tc.want || !errors.Is(err, tc.err) && err != tc.err {
			t.Errorf("aname %q: %q, %v; want %q, %v", tc.aname, got, err, tc.want, tc.err)
		}
	}

	// A read-only mount refuses writes.
	rroot, err := a.Attach("ro")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rroot.Mkdir("x", 0o755, 0, 0); err != linux.EROFS {
		t.Errorf("mkdir in a read-only mount: %v, want EROFS", err)
	}
	rroot.Close()

	// One connection closing does not stop the daemon.
	a.Close()
	if got, err := marker(t, b, "data"); err != nil || got != "data" {
		t.Fatalf("after a connection closed: %q, %v", got, err)
	}
	c := client(t, d.addr)
	if got, err := marker(t, c, ""); err != nil || got != "root" {
		t.Fatalf("a new connection: %q, %v", got, err)
	}
}

// TestServeStops proves cancelling the context closes the connections, the
// listener and the exports, and Serve returns nil.
func TestServeStops(t *testing.T) {
	fdsBefore := countFDs(t)
	root := exportDir(t, "root")
	d := start(t, Options{Exports: []Export{{Source: root}}})
	c := client(t, d.addr)
	if _, err := marker(t, c, ""); err != nil {
		t.Fatal(err)
	}
	rootFile, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	d.stop(t)
	if _, _, _, err := rootFile.GetAttr(p9.AttrMaskAll); err == nil {
		t.Fatal("a connection survived the daemon")
	}
	if conn, err := net.Dial("unix", d.addr); err == nil {
		conn.Close()
		t.Fatal("the listener survived the daemon")
	}
	c.Close()
	deadline := time.Now().Add(timeout)
	for countFDs(t) > fdsBefore {
		if time.Now().After(deadline) {
			t.Fatalf("fds: %d before, %d after", fdsBefore, countFDs(t))
		}
		time.Sleep(time.Millisecond)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestServeRefuses is the table of options Serve refuses before serving;
// every row also proves the listener is closed on that path.
func TestServeRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		opts    Options
		invalid bool // errors.Is ErrInvalidOptions (else: a failure opening)
	}{
		// No root export at all.
		{"no root", Options{Exports: []Export{{Tag: "a", Source: dir}}}, true},
		// Two root exports.
		{"two roots", Options{Exports: []Export{{Source: dir}, {Source: dir}}}, true},
		// A tag used twice.
		{"duplicate tag", Options{Exports: []Export{{Source: dir}, {Tag: "a", Source: dir}, {Tag: "a", Source: dir}}}, true},
		// "/" is the root's aname, it cannot be a tag.
		{"tag /", Options{Exports: []Export{{Source: dir}, {Tag: "/", Source: dir}}}, true},
		// NUL cannot travel in an aname.
		{"tag with NUL", Options{Exports: []Export{{Source: dir}, {Tag: "a\x00b", Source: dir}}}, true},
		{"tag ..", Options{Exports: []Export{{Source: dir}, {Tag: "..", Source: dir}}}, true},
		{"tag with newline", Options{Exports: []Export{{Source: dir}, {Tag: "a\nb", Source: dir}}}, true},
		// An export needs a source.
		{"empty source", Options{Exports: []Export{{Source: ""}}}, true},
		// Sandbox modes are a closed set.
		{"bad sandbox", Options{Exports: []Export{{Source: dir}}, Sandbox: "jail"}, true},
		// msize bounds.
		{"msize too small", Options{Exports: []Export{{Source: dir}}, MaxMsize: 100}, true},
		{"msize too large", Options{Exports: []Export{{Source: dir}}, MaxMsize: 1 << 30}, true},
		// Negative limits.
		{"negative fids", Options{Exports: []Export{{Source: dir}}, MaxFids: -1}, true},
		// Busy polling: 0 (off) to server.MaxBusyPoll.
		{"negative busy poll", Options{Exports: []Export{{Source: dir}}, BusyPoll: -1}, true},
		{"busy poll too long", Options{Exports: []Export{{Source: dir}}, BusyPoll: 2 * time.Millisecond}, true},
		// A source that does not exist fails when it is opened, after the
		// root export was opened: that one is closed again.
		{"missing mount source", Options{Exports: []Export{{Source: dir}, {Tag: "m", Source: filepath.Join(dir, "missing")}}}, false},
	}
	// hostfs opens /proc/self/fd once per process, with the first export
	// (see hostfs.openProcSelfFD): open it before counting, so that the
	// test passes alone too.
	_ = Serve(context.Background(), Options{Listener: listenUnix(t), Sandbox: "none",
		Exports: []Export{{Source: dir}, {Tag: "m", Source: filepath.Join(dir, "missing")}}})
	fdsBefore := countFDs(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := listenUnix(t)
			tc.opts.Listener = l
			if tc.opts.Sandbox == "" {
				tc.opts.Sandbox = "none"
			}
			err := Serve(context.Background(), tc.opts)
			if err == nil {
				t.Fatal("Serve accepted the options")
			}
			if got := errors.Is(err, ErrInvalidOptions); got != tc.invalid {
				t.Fatalf("Serve: %v (invalid options: %v, want %v)", err, got, tc.invalid)
			}
			if conn, err := net.Dial("unix", l.Addr().String()); err == nil {
				conn.Close()
				t.Fatal("the listener was left open")
			}
		})
	}
	if err := Serve(context.Background(), Options{Sandbox: "none"}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("no listener: %v", err)
	}
	if n := countFDs(t); n > fdsBefore {
		t.Fatalf("fds: %d before, %d after", fdsBefore, n)
	}
}

// TestNoFileLimit proves the fd limit asked of the sandbox.
func TestNoFileLimit(t *testing.T) {
	tests := []struct {
		fids, conns int
		want        uint64
	}{
		{10, 2, 20 + 256},           // fids times connections plus slack
		{0, 0, 1 << 20},             // the defaults (65536 x 256) hit the cap
		{1000, 4, 4000 + 256},       // a small daemon
		{1 << 20, 1 << 20, 1 << 20}, // never above fs.nr_open's default
	}
	for _, tc := range tests {
		if got := NoFileLimit(tc.fids, tc.conns); got != tc.want {
			t.Errorf("NoFileLimit(%d, %d) = %d, want %d", tc.fids, tc.conns, got, tc.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	got := describe([]Export{{Tag: "b", Source: "/b", ReadOnly: true}, {Source: "/r"}})
	if want := "/:/r,b:/b[ro]"; got != want {
		t.Fatalf("describe = %q, want %q", got, want)
	}
	if strings.Contains(describe(nil), ",") {
		t.Fatal("describe of nothing has a separator")
	}
}

// TestWalkFromOpenFid proves what the Linux client relies on in its cache
// modes (it clones the fids of open files): walking from an open fid to a
// new fid works with hostfs, while walking an open fid onto itself is
// EBUSY.
func TestWalkFromOpenFid(t *testing.T) {
	d := start(t, Options{Exports: []Export{{Source: exportDir(t, "root")}}})
	root, err := client(t, d.addr).Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, dir, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dir.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	_, f, err := dir.Walk([]string{"marker"})
	if err != nil {
		t.Fatalf("walk from an open directory: %v", err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	_, clone, err := f.Walk(nil)
	if err != nil {
		t.Fatalf("clone of an open file: %v", err)
	}
	if _, _, attr, err := clone.GetAttr(p9.AttrMask{Size: true}); err != nil || attr.Size != 4 {
		t.Fatalf("getattr on the clone: %v %v", attr, err)
	}
}

// TestServeShareGroups proves that the tagged exports of one share group
// (a pod volume mounted by several containers) are served by one attach
// point: the daemon holds fewer descriptors for three grouped mounts than
// for three separate ones, and every tag reaches the same files. It also
// proves a group must have one source and one mode.
func TestServeShareGroups(t *testing.T) {
	root, vol := exportDir(t, "root"), exportDir(t, "vol")
	exports := func(group string) []Export {
		return []Export{
			{Source: root},
			{Tag: "c1", Source: vol, Share: group},
			{Tag: "c2", Source: vol, Share: group},
			{Tag: "c3", Source: vol, Share: group},
		}
	}
	held := func(group string) int {
		before := countFDs(t)
		d := start(t, Options{Exports: exports(group)})
		n := countFDs(t) - before
		for _, tag := range []string{"c1", "c2", "c3"} {
			if got, err := marker(t, client(t, d.addr), tag); err != nil || got != "vol" {
				t.Errorf("group %q, tag %s: %q, %v; want the volume's marker", group, tag, got, err)
			}
		}
		d.stop(t)
		return n
	}
	separate, grouped := held(""), held("pod-volume")
	if grouped >= separate {
		t.Errorf("grouped mounts hold %d descriptors, separate ones %d: the group is not one attach point", grouped, separate)
	}

	dir := exportDir(t, "other")
	for _, bad := range [][]Export{
		{{Source: root}, {Tag: "a", Source: vol, Share: "g"}, {Tag: "b", Source: dir, Share: "g"}},                 // two sources
		{{Source: root}, {Tag: "a", Source: vol, Share: "g"}, {Tag: "b", Source: vol, Share: "g", ReadOnly: true}}, // two modes
	} {
		err := Serve(context.Background(), Options{Listener: listenUnix(t), Exports: bad, Sandbox: "none"})
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), `share group "g"`) {
			t.Errorf("Serve(%+v) = %v, want ErrInvalidOptions naming the share group", bad, err)
		}
	}
}
