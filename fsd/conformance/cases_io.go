package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Linux open flags as 9P2000.L carries them (P9_DOTL_*).
const (
	dotlTrunc  = 0o1000
	dotlAppend = 0o2000
	dotlCreat  = 0o100
	dotlExcl   = 0o200
)

func init() {
	register("open", testOpen)
	register("io", testIO)
	register("fsync", testFSync)
	register("unlinked-open", testUnlinkedOpen)
	register("concurrent", testConcurrent)
}

// noHang runs fn and fails the test if it has not returned within
// rpcTimeout (opening a FIFO must never block the server).
func noHang(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(rpcTimeout):
		t.Fatalf("%s: no reply (the server blocked)", what)
	}
}

func testOpen(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Rows that write get their own copy of file.txt.
	fresh := func(t *testing.T, name string) string {
		mustHost(t, os.WriteFile(e.host(name), []byte(exportFileContent), 0o644))
		return name
	}
	// Read-only open reads the host's bytes.
	e.run(t, "read-only", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		_, _, err := f.Open(p9.ReadOnly)
		ok(t, err, "open")
		got, err := readAll(f)
		ok(t, err, "read")
		if string(got) != exportFileContent {
			t.Errorf("read %q", got)
		}
	})
	// Write-only open writes at the offset given.
	e.run(t, "write-only", func(t *testing.T) {
		f := walk(t, root, fresh(t, "wo.txt"))
		_, _, err := f.Open(p9.WriteOnly)
		ok(t, err, "open")
		_, err = f.WriteAt([]byte("HE"), 0)
		ok(t, err, "write")
		if got, _ := os.ReadFile(e.host("wo.txt")); string(got) != "HEllo, export\n" {
			t.Errorf("host content %q", got)
		}
	})
	// Read-write open.
	e.run(t, "read-write", func(t *testing.T) {
		f := walk(t, root, fresh(t, "rw.txt"))
		_, _, err := f.Open(p9.ReadWrite)
		ok(t, err, "open")
		_, err = f.WriteAt([]byte("J"), 0)
		ok(t, err, "write")
		got, err := readAll(f)
		ok(t, err, "read")
		if string(got) != "Jello, export\n" {
			t.Errorf("read %q", got)
		}
	})
	// O_TRUNC truncates.
	e.run(t, "truncate", func(t *testing.T) {
		f := walk(t, root, fresh(t, "trunc.txt"))
		_, _, err := f.Open(p9.WriteOnly | dotlTrunc)
		ok(t, err, "open")
		if st := lstat(t, e.host("trunc.txt")); st.Size != 0 {
			t.Errorf("host size %d after O_TRUNC", st.Size)
		}
	})
	// O_APPEND is masked: a write lands at the offset the guest gives.
	e.run(t, "append-masked", func(t *testing.T) {
		f := walk(t, root, fresh(t, "append.txt"))
		_, _, err := f.Open(p9.WriteOnly | dotlAppend)
		ok(t, err, "open")
		_, err = f.WriteAt([]byte("AB"), 0)
		ok(t, err, "write")
		if got, _ := os.ReadFile(e.host("append.txt")); string(got) != "ABllo, export\n" {
			t.Errorf("host content %q", got)
		}
	})
	// Create flags on Tlopen are masked (the file exists; nothing is
	// created or refused).
	e.run(t, "creat-excl-masked", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		_, _, err := f.Open(p9.ReadOnly | dotlCreat | dotlExcl)
		ok(t, err, "open")
	})
	// Directories open read-only, never for writing.
	e.run(t, "directory", func(t *testing.T) {
		_, _, err := walk(t, root, "dir").Open(p9.ReadOnly)
		ok(t, err, "open dir")
		_, _, err = walk(t, root, "dir").Open(p9.WriteOnly)
		wantErrno(t, err, linux.EISDIR, "open dir for writing")
	})
	// A symlink is never opened (it would be followed): ELOOP.
	e.run(t, "symlink-eloop", func(t *testing.T) {
		_, _, err := walk(t, root, "to-canary").Open(p9.ReadOnly)
		wantErrno(t, err, linux.ELOOP, "open symlink")
	})
	// FIFOs, sockets and device nodes are never opened: ENXIO, at once.
	for _, row := range []struct {
		name string
		root bool
		make func(path string) error
	}{
		{"fifo-enxio", false, func(p string) error { return unix.Mkfifo(p, 0o666) }},
		{"socket-enxio", false, func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o777, 0) }},
		{"device-enxio", true, func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }},
	} {
		e.run(t, row.name, func(t *testing.T) {
			if row.root {
				needRoot(t)
			}
			mustHost(t, row.make(e.host(row.name)))
			for _, mode := range []p9.OpenFlags{p9.ReadOnly, p9.WriteOnly, p9.ReadWrite} {
				f := walk(t, root, row.name)
				var err error
				noHang(t, fmt.Sprintf("open %s mode %d", row.name, mode), func() { _, _, err = f.Open(mode) })
				wantErrno(t, err, linux.ENXIO, "open %s mode %d", row.name, mode)
			}
		})
	}
}

func testIO(t *testing.T, e *env) {
	// 8 MiB written through 9P in 1 MiB messages arrive byte for byte on
	// the host, and 8 MiB written on the host read back exactly.
	e.run(t, "8MiB-roundtrip", func(t *testing.T) {
		c := e.client(t, 1<<20)
		root, err := c.Attach("")
		ok(t, err, "attach")
		rng := rand.New(rand.NewPCG(1, 2))
		data := make([]byte, 8<<20)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		f, _, err := create(root, "big", p9.ReadWrite, 0o644)
		ok(t, err, "create")
		n, err := f.WriteAt(data, 0)
		ok(t, err, "write")
		if n != len(data) {
			t.Fatalf("wrote %d of %d", n, len(data))
		}
		host, err := os.ReadFile(e.host("big"))
		mustHost(t, err)
		if !bytes.Equal(host, data) {
			t.Fatalf("host bytes differ (len %d)", len(host))
		}
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		mustHost(t, os.WriteFile(e.host("big"), data, 0o644))
		g := walk(t, root, "big")
		_, _, err = g.Open(p9.ReadOnly)
		ok(t, err, "open")
		got := make([]byte, len(data)+100)
		n, err = g.ReadAt(got, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got[:n], data) {
			t.Fatalf("read %d bytes, differ from the host's", n)
		}
	})
	root := e.rootFile(t)
	// Reading at or past the end returns no data (EOF).
	e.run(t, "eof", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		_, _, err := f.Open(p9.ReadOnly)
		ok(t, err, "open")
		for _, off := range []int64{int64(len(exportFileContent)), 1 << 40} {
			n, err := f.ReadAt(make([]byte, 10), off)
			if n != 0 || !errors.Is(err, io.EOF) {
				t.Errorf("read at %d: %d, %v", off, n, err)
			}
		}
		n, err := f.ReadAt(make([]byte, 100), 6)
		if n != len(exportFileContent)-6 || (err != nil && !errors.Is(err, io.EOF)) {
			t.Errorf("short read at 6: %d, %v", n, err)
		}
	})
	// A write past the end leaves a hole.
	e.run(t, "sparse-write", func(t *testing.T) {
		f, _, err := create(root, "sparse", p9.WriteOnly, 0o600)
		ok(t, err, "create")
		_, err = f.WriteAt([]byte("Z"), 1<<20)
		ok(t, err, "write")
		got, _ := os.ReadFile(e.host("sparse"))
		if len(got) != 1<<20+1 || got[0] != 0 || got[1<<20] != 'Z' {
			t.Errorf("host file: size %d", len(got))
		}
	})
}

func testFSync(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Fsync of an open file succeeds.
	e.run(t, "open-file", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		_, _, err := f.Open(p9.ReadWrite)
		ok(t, err, "open")
		_, err = f.WriteAt([]byte("x"), 0)
		ok(t, err, "write")
		ok(t, f.FSync(), "fsync")
	})
	// Fsync of a fid that is not open fails.
	e.run(t, "not-open-fails", func(t *testing.T) {
		wantFail(t, walk(t, root, "file.txt").FSync(), "fsync of an unopened fid")
	})
}

func testUnlinkedOpen(t *testing.T, e *env) {
	root := e.rootFile(t)
	// A file unlinked on the host keeps working through its open fid.
	e.run(t, "host-unlink", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("victim"), []byte("before"), 0o644))
		f := walk(t, root, "victim")
		_, _, err := f.Open(p9.ReadWrite)
		ok(t, err, "open")
		mustHost(t, os.Remove(e.host("victim")))
		_, err = f.WriteAt([]byte("AFTER!"), 0)
		ok(t, err, "write after unlink")
		got, err := readAll(f)
		ok(t, err, "read after unlink")
		if string(got) != "AFTER!" {
			t.Errorf("read %q", got)
		}
		_, _, a, err := f.GetAttr(p9.AttrMaskAll)
		ok(t, err, "getattr after unlink")
		if a.NLink != 0 {
			t.Errorf("nlink %d after unlink", a.NLink)
		}
		ok(t, f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 3}), "truncate after unlink")
		if got, err := readAll(f); err != nil || string(got) != "AFT" {
			t.Errorf("after truncate: %q, %v", got, err)
		}
		if _, err := os.Lstat(e.host("victim")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("victim reappeared: %v", err)
		}
	})
	// A file unlinked through 9P keeps working through its open fid.
	e.run(t, "9p-unlink", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("victim2"), []byte("before"), 0o644))
		f := walk(t, root, "victim2")
		_, _, err := f.Open(p9.ReadWrite)
		ok(t, err, "open")
		ok(t, root.UnlinkAt("victim2", 0), "unlinkat")
		_, err = f.WriteAt([]byte("xyz"), 6)
		ok(t, err, "write after unlink")
		got, err := readAll(f)
		ok(t, err, "read after unlink")
		if string(got) != "beforexyz" {
			t.Errorf("read %q", got)
		}
		_, _, a, err := f.GetAttr(p9.AttrMaskAll)
		ok(t, err, "getattr after unlink")
		if a.NLink != 0 || a.Size != 9 {
			t.Errorf("nlink %d size %d after unlink", a.NLink, a.Size)
		}
	})
}

func testConcurrent(t *testing.T, e *env) {
	// Eight connections at once, each creating, writing, reading back,
	// listing and walking; every byte lands on the host.
	e.run(t, "8-connections", func(t *testing.T) {
		const conns, size = 8, 256 << 10
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := concurrentClient(e.sock, i, size); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for i := range conns {
			got, err := os.ReadFile(e.host(fmt.Sprintf("conc-%d", i)))
			mustHost(t, err)
			if !bytes.Equal(got, pattern(i, size)) {
				t.Errorf("conc-%d: host bytes differ", i)
			}
		}
	})
}

// pattern is connection i's data.
func pattern(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7 + j>>9)
	}
	return b
}

// concurrentClient is one of testConcurrent's connections; it reports
// errors instead of failing the test (it runs on its own goroutine).
func concurrentClient(sock string, i, size int) error {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	c, err := p9.NewClient(conn, p9.WithMessageSize(64<<10))
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	root, err := c.Attach("")
	if err != nil {
		return err
	}
	name := fmt.Sprintf("conc-%d", i)
	f, _, err := create(root, name, p9.ReadWrite, 0o644)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	data := pattern(i, size)
	for off := 0; off < size; off += 16 << 10 {
		if _, err := f.WriteAt(data[off:off+16<<10], int64(off)); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	got, err := readAll(f)
	if err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("read back: %d bytes, %v", len(got), err)
	}
	for range 5 {
		_, d, err := root.Walk(nil)
		if err != nil {
			return err
		}
		if _, _, err := d.Open(p9.ReadOnly); err != nil {
			return fmt.Errorf("open root: %w", err)
		}
		names, err := readdirAll(d, 4096)
		if err != nil {
			return fmt.Errorf("readdir: %w", err)
		}
		sort.Strings(names)
		if i := sort.SearchStrings(names, "file.txt"); i == len(names) || names[i] != "file.txt" {
			return fmt.Errorf("readdir misses file.txt: %v", names)
		}
		d.Close()
		_, g, err := walkFull(root, []string{"dir", "sub.txt"})
		if err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		g.Close()
	}
	return f.Close()
}

// readdirAll reads a whole open directory in count-byte requests,
// following each reply's last offset, and returns the names in order.
func readdirAll(d p9.File, count uint32) ([]string, error) {
	var names []string
	var off uint64
	for range 1 << 20 {
		ents, err := d.Readdir(off, count)
		if err != nil {
			return names, err
		}
		if len(ents) == 0 {
			return names, nil
		}
		for _, de := range ents {
			names = append(names, de.Name)
		}
		off = ents[len(ents)-1].Offset
	}
	return names, errors.New("readdir never ended")
}
