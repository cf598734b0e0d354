package server

import (
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// TestPipelineIsBounded sends 10,000 requests (half of them 8 KiB writes)
// without reading a reply. The server must stop reading at the in-flight
// bound, so its memory stays flat while the client's writes block; then
// every request is answered, in full, once the client reads.
func TestPipelineIsBounded(t *testing.T) {
	const (
		total       = 10000
		maxInflight = 32
		msize       = 16 << 10
	)
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, addr := serve(t, fs, WithMaxInflight(maxInflight))
	c := versioned(t, addr, msize)
	c.attach(1)
	c.walk(1, 2, "f")
	c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadWrite})

	payload := bytes.Repeat([]byte{0xAB}, 8<<10)
	frames := make([][]byte, total)
	for i := range frames {
		tag := proto.Tag(i + 1)
		if i%2 == 0 {
			frames[i] = encode(t, tag, &proto.Twrite{FID: 2, Offset: uint64(i%64) * 8 << 10, Data: payload})
		} else {
			frames[i] = encode(t, tag, &proto.Tgetattr{FID: 2, Mask: p9.AttrMaskAll})
		}
	}
	var sent int
	for _, f := range frames {
		sent += len(f)
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	writeErr := make(chan error, 1)
	go func() {
		var err error
		for _, f := range frames {
			if _, err = c.conn.Write(f); err != nil {
				break
			}
		}
		writeErr <- err
	}()
	// The server fills its in-flight bound and stops reading; the client's
	// writes then block in the kernel.
	waitFor(t, "the in-flight bound to fill", func() bool { return s.Stats().Inflight >= maxInflight })
	runtime.GC()
	var stalled runtime.MemStats
	runtime.ReadMemStats(&stalled)
	if st := s.Stats(); st.Inflight > maxInflight {
		t.Fatalf("%d requests in flight, bound %d", st.Inflight, maxInflight)
	}
	growth := int64(stalled.HeapAlloc) - int64(before.HeapAlloc)
	// In flight: at most maxInflight frames and replies of at most msize.
	// The pipeline itself is 40 MiB.
	if limit := int64(4 * maxInflight * msize); growth > limit {
		t.Fatalf("heap grew %d bytes while %d bytes were pipelined (limit %d)", growth, sent, limit)
	}
	t.Logf("pipelined %d bytes; server heap grew %d bytes at the bound of %d in flight", sent, growth, maxInflight)

	seen := make([]bool, total+1)
	for i := 0; i < total; i++ {
		tag, m := c.recv()
		if tag == 0 || int(tag) > total || seen[tag] {
			t.Fatalf("reply with tag %d", tag)
		}
		seen[tag] = true
		switch r := m.(type) {
		case *proto.Rwrite:
			if int(r.Count) != len(payload) || tag%2 != 1 {
				t.Fatalf("tag %d: Rwrite %d", tag, r.Count)
			}
		case *proto.Rgetattr:
			if tag%2 != 0 {
				t.Fatalf("tag %d: unexpected Rgetattr", tag)
			}
		default:
			t.Fatalf("tag %d: %#v", tag, m)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("pipelined writes: %v", err)
	}
	waitFor(t, "nothing in flight", func() bool { return s.Stats().Inflight == 0 })
}

// settle waits for the goroutine and fd counts to come back to at most the
// baseline, and fails with the numbers if they do not.
func settle(t *testing.T, what string, goroutines, fds int) {
	t.Helper()
	ok := func() bool { return runtime.NumGoroutine() <= goroutines && openFDs(t) <= fds }
	waitFor(t, what, func() bool {
		if !ok() {
			runtime.GC() // finalizers of p9's client Files close nothing here, but let the runtime tidy up
		}
		return ok()
	})
}

// TestManyConnectionsLeakNothing runs 1,000 connections one after another
// and then 64 at once, each doing real work and hanging up with fids still
// open; afterwards goroutines, fds, fids and Files are back where they were.
func TestManyConnectionsLeakNothing(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, addr := serve(t, fs)
	session := func() error {
		conn, err := net.Dial("unix", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		cl, err := p9.NewClient(conn, p9.WithMessageSize(8192))
		if err != nil {
			return err
		}
		root, err := cl.Attach("")
		if err != nil {
			return err
		}
		_, f, err := root.Walk([]string{"f"})
		if err != nil {
			return err
		}
		if _, _, err := f.Open(p9.ReadOnly); err != nil {
			return err
		}
		buf := make([]byte, 16)
		if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "payload" {
			return linux.EIO
		}
		// Hang up with both fids open: the server must clunk them.
		return nil
	}
	// One session first, so that lazily created state (pools, timers)
	// exists before the baseline.
	if err := session(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first session to end", func() bool { return s.Stats() == Stats{} })
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	for i := 0; i < 1000; i++ {
		if err := session(); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	waitFor(t, "sequential sessions to end", func() bool { return s.Stats() == Stats{} })
	settle(t, "goroutines and fds after 1,000 sequential connections", goroutines, fds)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	start := make(chan struct{})
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := session(); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent session: %v", err)
	}
	waitFor(t, "concurrent sessions to end", func() bool { return s.Stats() == Stats{} })
	settle(t, "goroutines and fds after 64 concurrent connections", goroutines, fds)
	if n := fs.live.Load(); n != 0 {
		t.Fatalf("%d Files never closed", n)
	}
	if n := fs.doubleClose.Load(); n != 0 {
		t.Fatalf("%d Files closed twice", n)
	}
}

// TestConnectionLimit proves a connection past WithMaxConns is closed at
// once while the others keep working, and a slot frees when one ends.
func TestConnectionLimit(t *testing.T) {
	fs := newTestFS(t)
	s, addr := serve(t, fs, WithMaxConns(2))
	a := versioned(t, addr, 8192)
	b := versioned(t, addr, 8192)
	over := newRaw(t, addr)
	if !over.closedByServer() {
		t.Fatal("third connection was served")
	}
	a.attach(1)
	b.attach(1)
	a.conn.Close()
	waitFor(t, "a slot to free", func() bool { return s.Stats().Conns == 1 })
	c := versioned(t, addr, 8192)
	c.attach(1)
}

// TestServeShutdown proves cancelling Serve's context closes every
// connection, closes every File, and returns nil.
func TestServeShutdown(t *testing.T) {
	fs := newTestFS(t)
	s := New(fs, WithLogger(testLogger(t)))
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	conns := make([]*rawClient, 3)
	for i := range conns {
		conns[i] = versioned(t, l.Addr().String(), 8192)
		conns[i].attach(1)
		conns[i].walk(1, 2)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	for _, c := range conns {
		if !c.closedByServer() {
			t.Fatal("a connection outlived Serve")
		}
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("after Serve: %+v", st)
	}
	if n := fs.live.Load(); n != 0 {
		t.Fatalf("%d Files still open after Serve", n)
	}
	if _, err := net.Dial("unix", l.Addr().String()); err == nil {
		t.Fatal("listener still accepting after Serve")
	}
}
