package server

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// goid returns the calling goroutine's ID (the first line of its stack
// trace: "goroutine N [running]:").
func goid() uint64 {
	var buf [64]byte
	b := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// TestWorkersAreReused proves that requests on a connection run on worker
// goroutines that outlive them: 200 requests one after another run on a
// handful of goroutines (a goroutine per request, which grows a fresh stack
// every time, would show 200).
func TestWorkersAreReused(t *testing.T) {
	fs := newTestFS(t)
	_, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	var mu sync.Mutex
	seen := map[uint64]int{}
	fs.setHook("GetAttr", func(*testFile) error {
		mu.Lock()
		seen[goid()]++
		mu.Unlock()
		return nil
	})
	const n = 200
	for i := 0; i < n; i++ {
		c.call(&proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll})
	}
	mu.Lock()
	defer mu.Unlock()
	// One worker serves a client that waits for each reply; a reply is
	// written before its worker is idle again, so now and then the next
	// request finds no idle worker and starts another (never more than
	// maxIdleWorkers stay).
	if len(seen) > 2*maxIdleWorkers {
		t.Fatalf("%d requests ran on %d goroutines, want at most %d", n, len(seen), 2*maxIdleWorkers)
	}
}

// TestIdleWorkersBounded proves that a burst of concurrent requests does not
// leave its workers behind: once the burst is answered, at most
// maxIdleWorkers more goroutines remain than before it, and they end with
// the connection.
func TestIdleWorkersBounded(t *testing.T) {
	fs := newTestFS(t)
	s, addr := serve(t, fs)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	c := versioned(t, addr, 8192)
	c.attach(1)
	c.call(&proto.Tgetattr{FID: 1}) // a first worker, idle from now on
	before := runtime.NumGoroutine()

	const burst = 32
	g := make(gate)
	fs.setHook("GetAttr", g.wait)
	for tag := proto.Tag(1); tag <= burst; tag++ {
		c.send(tag, &proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll})
	}
	// The first Tgetattr (attach's) counts too.
	waitFor(t, "the burst to reach the File", func() bool { return fs.called("GetAttr") == 2+burst })
	if n := runtime.NumGoroutine(); n < before+burst-1 {
		t.Fatalf("%d goroutines with %d requests blocked, want at least %d: requests must not wait for each other", n, burst, before+burst-1)
	}
	close(g)
	for i := 0; i < burst; i++ {
		if _, m := c.recv(); m.Type() != proto.TypeRgetattr {
			t.Fatalf("reply %v", m.Type())
		}
	}
	waitFor(t, "the burst's extra workers to exit", func() bool {
		return runtime.NumGoroutine() <= before+maxIdleWorkers
	})
	c.conn.Close()
	waitFor(t, "the connection to end", func() bool { return s.Stats() == Stats{} })
	settle(t, "goroutines and fds after the connection ended", goroutines, fds)
}
