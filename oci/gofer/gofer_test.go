package gofer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/fsd/hostfs"
	"github.com/fsd-launcher/fsd-launcher/oci"
)

// writeBundle creates a bundle in a temporary directory: rootfs/, the given
// directories with a marker file each (the marker holds the directory's
// name), and config.json from cfg.
func writeBundle(t *testing.T, cfg string, dirs ...string) *oci.Bundle {
	t.Helper()
	dir := t.TempDir()
	for _, d := range append([]string{"rootfs"}, dirs...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "marker"), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg = strings.ReplaceAll(cfg, "@DIR@", dir)
	if err := os.WriteFile(filepath.Join(dir, oci.ConfigName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := oci.LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A bundle with a read-write and a read-only bind mount, and a pod volume
// mounted twice.
const sampleConfig = `{
	"root": {"path": "rootfs"},
	"annotations": {
		"dev.gvisor.spec.mount.pv.source": "@DIR@/podvol",
		"dev.gvisor.spec.mount.pv.type": "bind",
		"dev.gvisor.spec.mount.pv.share": "pod"
	},
	"mounts": [
		{"destination": "/proc", "type": "proc", "source": "proc"},
		{"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "rw"]},
		{"destination": "/conf", "type": "bind", "source": "conf", "options": ["rbind", "ro"]},
		{"destination": "/p1", "type": "bind", "source": "podvol", "options": ["rbind"]},
		{"destination": "/p2", "type": "bind", "source": "podvol", "options": ["rbind"]}
	]
}`

// pairs creates n connected unix stream socket pairs and returns the raw
// descriptors of the gofer ends and the sandbox ends as connections.
func pairs(t *testing.T, n int) (goferFDs []int, sandbox []net.Conn) {
	t.Helper()
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fds[0]), "sandbox end")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		goferFDs = append(goferFDs, fds[1])
		sandbox = append(sandbox, c)
	}
	return goferFDs, sandbox
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settle waits (bounded) until f reports the wanted count, and returns
// the last count seen.
func settle(want int, f func() int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := f()
		if got <= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readFile reads a whole file below root through 9P.
func readFile(t *testing.T, root p9.File, name string) string {
	t.Helper()
	_, f, err := root.Walk([]string{name})
	if err != nil {
		t.Fatalf("walk %s: %v", name, err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(buf[:n])
}

// createFile creates name below root through 9P and writes data to it.
func createFile(root p9.File, name, data string) error {
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
	_, err = f.WriteAt([]byte(data), 0)
	return err
}

func TestServeExports(t *testing.T) {
	b := writeBundle(t, sampleConfig, "data", "conf", "podvol")
	exports := b.Exports()
	if len(exports) != 5 {
		t.Fatalf("exports %+v", exports)
	}
	// hostfs keeps one process-wide descriptor (/proc/self/fd) from its
	// first use on: take it before counting.
	warm, err := hostfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	fdsBefore := openFDs(t)
	goroutinesBefore := runtime.NumGoroutine()

	goferFDs, sandbox := pairs(t, len(exports))
	conns, err := FileConns(goferFDs)
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Int32
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), b, conns, WithReady(func() { ready.Add(1) })) }()

	clients := make([]*p9.Client, len(sandbox))
	for i, c := range sandbox {
		if clients[i], err = p9.NewClient(c); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	for i, e := range exports {
		t.Run(fmt.Sprintf("fd%d", i), func(t *testing.T) {
			c := clients[i]
			// "", "/" and the export's own tag attach the connection's export;
			// so the marker seen is that export's.
			for _, aname := range []string{"", "/", e.Tag} {
				root, err := c.Attach(aname)
				if err != nil {
					t.Fatalf("attach %q: %v", aname, err)
				}
				want := filepath.Base(e.Source)
				if got := readFile(t, root, "marker"); got != want {
					t.Errorf("attach %q on io fd %d serves %q, want %q", aname, i, got, want)
				}
				root.Close()
			}
			// Any other aname, another export's tag included, is ENOENT: a
			// connection serves its export and nothing else.
			other := exports[1].Tag
			if i == 1 {
				other = exports[2].Tag
			}
			for _, aname := range []string{other, "/nonexistent", "data", "//", "/data/"} {
				if f, err := c.Attach(aname); !errors.Is(err, linux.ENOENT) {
					if f != nil {
						f.Close()
					}
					t.Errorf("attach %q on io fd %d: %v, want ENOENT", aname, i, err)
				}
			}
			// Writes land on the host for a read-write export and are EROFS
			// for a read-only one.
			root, err := c.Attach("")
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			name := fmt.Sprintf("written-%d", i)
			err = createFile(root, name, "hello "+e.Tag)
			host := filepath.Join(e.Source, name)
			if e.ReadOnly {
				if !errors.Is(err, linux.EROFS) {
					t.Errorf("create on read-only %s: %v, want EROFS", e.Tag, err)
				}
				if _, serr := os.Stat(host); !os.IsNotExist(serr) {
					t.Errorf("read-only export wrote %s (%v)", host, serr)
				}
				return
			}
			if err != nil {
				t.Fatalf("create on %s: %v", e.Tag, err)
			}
			if got, _ := os.ReadFile(host); string(got) != "hello "+e.Tag {
				t.Errorf("host file %s = %q", host, got)
			}
		})
	}
	if n := ready.Load(); n != 1 {
		t.Errorf("ready called %d times", n)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned while connections were open: %v", err)
	default:
	}
	// Every client hangs up: Serve returns nil.
	for _, c := range clients {
		c.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after every connection closed")
	}
	if got := settle(fdsBefore, func() int { return openFDs(t) }); got > fdsBefore {
		t.Errorf("%d descriptors open after Serve, %d before", got, fdsBefore)
	}
	if got := settle(goroutinesBefore, runtime.NumGoroutine); got > goroutinesBefore {
		t.Errorf("%d goroutines after Serve, %d before", got, goroutinesBefore)
	}
}

func TestServeCountMismatch(t *testing.T) {
	b := writeBundle(t, sampleConfig, "data", "conf", "podvol")
	for _, n := range []int{0, 1, 4, 6} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			goferFDs, sandbox := pairs(t, n)
			conns, err := FileConns(goferFDs)
			if err != nil {
				t.Fatal(err)
			}
			err = Serve(context.Background(), b, conns)
			var ce *CountError
			if !errors.As(err, &ce) || ce.Exports != 5 || ce.FDs != n {
				t.Fatalf("Serve with %d fds: %v, want a CountError 5/%d", n, err, n)
			}
			// The message names both counts.
			if msg := err.Error(); !strings.Contains(msg, "5 exports") || !strings.Contains(msg, fmt.Sprintf("but %d io fds", n)) {
				t.Errorf("message %q", msg)
			}
			// Serve closed the connections it was given: the peers see EOF.
			for i, c := range sandbox {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("sandbox end %d: read %v, want EOF", i, err)
				}
			}
		})
	}
}

func TestServeContextCancel(t *testing.T) {
	b := writeBundle(t, `{"root":{"path":"rootfs"}}`)
	goferFDs, sandbox := pairs(t, 1)
	conns, err := FileConns(goferFDs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, b, conns, WithReady(func() { close(readyc) })) }()
	client, err := p9.NewClient(sandbox[0])
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	<-readyc
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	// The connection was closed: the client's next request fails.
	if f, err := client.Attach(""); err == nil {
		f.Close()
		t.Error("attach succeeded after Serve returned")
	}
}

func TestServeExportOpenFails(t *testing.T) {
	b := writeBundle(t, `{"root":{"path":"rootfs"},"mounts":[{"destination":"/d","type":"bind","source":"data"}]}`, "data")
	// The source disappears between load and serve: Serve fails, naming the
	// export, and closes the connections.
	if err := os.RemoveAll(filepath.Join(b.Dir, "data")); err != nil {
		t.Fatal(err)
	}
	goferFDs, sandbox := pairs(t, 2)
	conns, err := FileConns(goferFDs)
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), b, conns)
	if err == nil || !strings.Contains(err.Error(), "export /d") {
		t.Fatalf("Serve: %v, want an error naming export /d", err)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("Serve: %v, want ENOENT inside", err)
	}
	for i, c := range sandbox {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("sandbox end %d: read %v, want EOF", i, err)
		}
	}
}

func TestOpenExportsSharing(t *testing.T) {
	b := writeBundle(t, `{
		"root": {"path": "rootfs"},
		"annotations": {
			"dev.gvisor.spec.mount.pv.source": "@DIR@/podvol",
			"dev.gvisor.spec.mount.pv.type": "bind",
			"dev.gvisor.spec.mount.pv.share": "shared",
			"dev.gvisor.spec.mount.cv.source": "@DIR@/ctrvol",
			"dev.gvisor.spec.mount.cv.type": "bind",
			"dev.gvisor.spec.mount.cv.share": "container"
		},
		"mounts": [
			{"destination": "/a", "type": "bind", "source": "podvol"},
			{"destination": "/b", "type": "bind", "source": "podvol"},
			{"destination": "/c", "type": "bind", "source": "podvol", "options": ["ro"]},
			{"destination": "/d", "type": "bind", "source": "ctrvol"},
			{"destination": "/e", "type": "bind", "source": "ctrvol"},
			{"destination": "/f", "type": "bind", "source": "podvol", "options": ["ro"]}
		]}`, "podvol", "ctrvol")
	fss, closeAll, err := openExports(b.Exports(), nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	for _, tc := range []struct {
		i, j  int
		share bool
	}{
		{1, 2, true},  // /a and /b: one share=shared volume, both read-write
		{3, 6, true},  // /c and /f: the same volume, both read-only
		{1, 3, false}, // /a and /c: read-write and read-only attach points differ
		{4, 5, false}, // /d and /e: share=container, one attach point each
		{0, 1, false}, // the root is never shared
	} {
		if got := fss[tc.i] == fss[tc.j]; got != tc.share {
			t.Errorf("exports %d and %d share an FS: %v, want %v", tc.i, tc.j, got, tc.share)
		}
	}
}

func TestParseFDs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"3", []int{3}, true},                // one fd
		{"3,4,10", []int{3, 4, 10}, true},    // several, in the order given
		{" 5 , 4 ", []int{5, 4}, true},       // spaces around entries
		{"", nil, false},                     // empty
		{"3,,4", nil, false},                 // empty entry
		{"2", nil, false},                    // stderr
		{"0,3", nil, false},                  // stdin
		{"3,x", nil, false},                  // not a number
		{"-1", nil, false},                   // negative
		{"3,4,3", nil, false},                // a socket served twice
		{"99999999999999999999", nil, false}, // overflow
	} {
		got, err := ParseFDs(tc.in)
		if tc.ok != (err == nil) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ParseFDs(%q) = %v, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadFD) {
			t.Errorf("ParseFDs(%q): %v is not ErrBadFD", tc.in, err)
		}
	}
}

func TestFileConnsRejects(t *testing.T) {
	before := openFDs(t)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeW.Close()
	dgram, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dgram[1])
	good, _ := pairs(t, 1)
	pipeFD, err := unix.Dup(int(pipeR.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	pipeR.Close()

	for _, tc := range []struct {
		name string
		fds  []int
	}{
		{"pipe", []int{good[0], pipeFD}}, // not a socket
		{"datagram", []int{dgram[0]}},    // not a stream socket
		{"closed fd", []int{987654}},     // not open at all
	} {
		_, err := FileConns(tc.fds)
		if !errors.Is(err, ErrBadFD) {
			t.Errorf("%s: %v, want ErrBadFD", tc.name, err)
		}
		if tc.name != "closed fd" && !strings.Contains(err.Error(), fmt.Sprintf("io fd %d", tc.fds[len(tc.fds)-1])) {
			t.Errorf("%s: %q does not name the fd", tc.name, err)
		}
	}
	// Every inherited descriptor was closed, the good one included: only
	// the two we still hold (pipeW, dgram[1]) and the good pair's sandbox
	// end remain.
	if got := openFDs(t); got != before+3 {
		t.Errorf("%d descriptors open, want %d", got, before+3)
	}
}
