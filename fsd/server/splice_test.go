package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// TestSplicedReads: with a pipe pool, Tread on a FileSplicer splices the
// data (the File's SpliceRead is called) and the client reads exactly the
// host's bytes: from a page boundary, from inside a page (the head is
// copied, the rest spliced), a short read at the end of the file, at and
// past the end, many readers at once with fewer pipes than readers, and a
// File that cannot splice (its reads go through buffers). Every pipe is
// back in the pool afterwards.
func TestSplicedReads(t *testing.T) {
	const msize = 1 << 20
	fs := newTestFS(t)
	data := make([]byte, 3<<20+123)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(fs.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := NewPipePool(2, msize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the server's own cleanup (LIFO)
	_, addr := serve(t, fs, WithPipePool(pool))
	c := p9Client(t, addr, msize)
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	open := func() (p9.File, error) {
		_, f, err := root.Walk([]string{"f"})
		if err != nil {
			return nil, err
		}
		_, _, err = f.Open(p9.ReadOnly)
		return f, err
	}
	f, err := open()
	if err != nil {
		t.Fatal(err)
	}
	// check reads n bytes at off and compares them with the host's.
	check := func(f p9.File, off int64, n int) error {
		buf := make([]byte, n)
		got, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %d at %d: %v", n, off, err)
		}
		want := []byte{}
		if off < int64(len(data)) {
			want = data[off:min(off+int64(n), int64(len(data)))]
		}
		if !bytes.Equal(buf[:got], want) {
			return fmt.Errorf("read %d at %d: %d bytes, want %d (or the bytes differ)", n, off, got, len(want))
		}
		return nil
	}
	readAt := func(t *testing.T, f p9.File, off int64, n int) {
		t.Helper()
		if err := check(f, off, n); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		off  int64
		n    int
	}{
		{"aligned", 0, msize - 11},
		{"inside a page", 5, msize - 11},
		{"inside a page, small", 4096*3 + 17, 10000},
		{"short at the end", int64(len(data)) - 100, msize - 11},
		{"at the end", int64(len(data)), 4096},
		{"past the end", int64(len(data)) + 5000, 4096},
		{"whole file", 0, len(data)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { readAt(t, f, tc.off, tc.n) })
	}
	if fs.called("SpliceRead") == 0 {
		t.Fatal("no read was spliced")
	}

	t.Run("more readers than pipes", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := open()
				if err != nil {
					t.Error(err)
					return
				}
				defer g.Close()
				for off := int64(i * 777); off < int64(len(data)); off += 900_001 {
					if err := check(g, off, msize-11); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})

	t.Run("no splice", func(t *testing.T) {
		fs.setHook("SpliceRead", func(*testFile) error { return linux.EINVAL })
		defer fs.setHook("SpliceRead", nil)
		before := fs.called("ReadAt")
		readAt(t, f, 4096, msize-11)
		if fs.called("ReadAt") == before {
			t.Fatal("the read did not fall back to ReadAt")
		}
	})

	// Two spliced replies pending on a full socket, and the client hangs
	// up: the pipes, which still hold data, are emptied and back in the
	// pool (it is fixed: no pipe2 under the daemon's seccomp filter).
	t.Run("client hangs up mid-reply", func(t *testing.T) {
		rc := versioned(t, addr, msize)
		rc.attach(1)
		rc.walk(1, 2, "f")
		rc.call(&proto.Tlopen{FID: 2, Flags: p9.ReadOnly})
		rc.send(1, &proto.Tread{FID: 2, Offset: 0, Count: msize - proto.IOHeaderSize})
		rc.send(2, &proto.Tread{FID: 2, Offset: 1 << 20, Count: msize - proto.IOHeaderSize})
		waitFor(t, "both pipes in use", func() bool { return len(pool.idle) == 0 })
		rc.conn.Close()
		waitFor(t, "both pipes back in the pool", func() bool { return len(pool.idle) == 2 })
	})

	if got := len(pool.idle); got != 2 {
		t.Fatalf("%d pipes idle in the pool after the reads, want 2", got)
	}
}
