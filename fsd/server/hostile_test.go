package server

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// gate blocks File methods until opened.
type gate chan struct{}

func (g gate) wait(*testFile) error { <-g; return nil }

func rawFrame(typ proto.MsgType, tag proto.Tag, body []byte) []byte {
	b := make([]byte, proto.HeaderSize, proto.HeaderSize+len(body))
	b = append(b, body...)
	proto.PutHeader(b, uint32(len(b)), typ, tag)
	return b
}

func encode(t testing.TB, tag proto.Tag, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Append(nil, tag, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileFrames sends, on a fresh connection each, what a broken or
// malicious client might, and checks the outcome: an errno, a specific
// reply, or a closed connection. After every row another connection must
// still be served, and at the end no fid, File or request is left.
func TestHostileFrames(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, addr := serve(t, fs)
	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = "a"
	}
	hugeSize := make([]byte, proto.HeaderSize)
	binary.LittleEndian.PutUint32(hugeSize, 0xFFFFFFFF) // 4 GiB
	hugeSize[4] = byte(proto.TypeTwrite)

	type outcome struct {
		closed bool        // the server must close the connection
		errno  linux.Errno // else the Rlerror expected (0: see check)
		check  func(t *testing.T, m proto.Message)
	}
	tests := []struct {
		name    string
		version bool     // negotiate msize 8192 first
		attach  bool     // attach fid 1 and open fid 2 on "f" first
		frames  [][]byte // sent in order; the outcome is about the last reply
		want    outcome
	}{
		// Random bytes decode as an absurd size field: closed before any
		// allocation.
		{name: "garbage", frames: [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")}, want: outcome{closed: true}},
		// Before Tversion only a small frame is read: a frame past the
		// minimum msize is closed before its body is read.
		{name: "big frame before Tversion", frames: [][]byte{rawFrame(proto.TypeTversion, proto.NoTag, make([]byte, MinMsize))}, want: outcome{closed: true}},
		// A size field of 4 GiB after negotiation: closed.
		{name: "size 4 GiB", version: true, frames: [][]byte{hugeSize}, want: outcome{closed: true}},
		// A size field below the header: closed.
		{name: "size below header", version: true, frames: [][]byte{{3, 0, 0, 0, byte(proto.TypeTclunk), 1, 0}}, want: outcome{closed: true}},
		// A frame one byte larger than the negotiated msize: closed.
		{name: "frame past msize", version: true, frames: [][]byte{rawFrame(proto.TypeTwrite, 1, make([]byte, 8192-proto.HeaderSize+1))}, want: outcome{closed: true}},
		// A well-framed unknown type: EOPNOTSUPP, connection kept.
		{name: "unknown type", version: true, frames: [][]byte{rawFrame(99, 1, []byte{1, 2, 3})}, want: outcome{errno: linux.EOPNOTSUPP}},
		// An R message sent as a request: EOPNOTSUPP.
		{name: "R message as request", version: true, frames: [][]byte{rawFrame(proto.TypeRread, 1, []byte{0, 0, 0, 0})}, want: outcome{errno: linux.EOPNOTSUPP}},
		// A body that does not decode: EINVAL, connection kept.
		{name: "trailing byte", version: true, frames: [][]byte{rawFrame(proto.TypeTclunk, 1, []byte{1, 0, 0, 0, 9})}, want: outcome{errno: linux.EINVAL}},
		// A walk of 17 names: EINVAL.
		{name: "walk of 17 names", version: true, attach: true, frames: [][]byte{rawFrame(proto.TypeTwalk, 1, walkBody(1, 3, seventeen))}, want: outcome{errno: linux.EINVAL}},
		// Tread count past msize: EINVAL (p9's server panics on it).
		{name: "read past msize", version: true, attach: true, frames: [][]byte{encode(t, 1, &proto.Tread{FID: 2, Count: 1 << 20})}, want: outcome{errno: linux.EINVAL}},
		// Tread count just under msize is clamped so the reply fits.
		{name: "read clamped", version: true, attach: true, frames: [][]byte{encode(t, 1, &proto.Tread{FID: 2, Count: 8192})}, want: outcome{check: func(t *testing.T, m proto.Message) {
			if r, ok := m.(*proto.Rread); !ok || string(r.Data) != "0123456789" {
				t.Fatalf("reply %#v", m)
			}
		}}},
		// An unknown fid: EBADF.
		{name: "unknown fid", version: true, frames: [][]byte{encode(t, 1, &proto.Tgetattr{FID: 42})}, want: outcome{errno: linux.EBADF}},
		// Reusing a fid before clunking it: EBADF.
		{name: "fid reuse", version: true, attach: true, frames: [][]byte{encode(t, 1, &proto.Tattach{FID: 1, Afid: proto.NoFID})}, want: outcome{errno: linux.EBADF}},
		// A flush of a tag not in flight: Rflush at once.
		{name: "flush of a missing tag", version: true, frames: [][]byte{encode(t, 1, &proto.Tflush{OldTag: 77})}, want: outcome{check: func(t *testing.T, m proto.Message) {
			if _, ok := m.(*proto.Rflush); !ok {
				t.Fatalf("reply %#v", m)
			}
		}}},
		// A flush naming itself: Rflush at once, no self-wait.
		{name: "flush of itself", version: true, frames: [][]byte{encode(t, 5, &proto.Tflush{OldTag: 5})}, want: outcome{check: func(t *testing.T, m proto.Message) {
			if _, ok := m.(*proto.Rflush); !ok {
				t.Fatalf("reply %#v", m)
			}
		}}},
		// Anything before Tversion: EPROTO.
		{name: "request before Tversion", frames: [][]byte{encode(t, 1, &proto.Tattach{FID: 1, Afid: proto.NoFID})}, want: outcome{errno: linux.EPROTO}},
		// A read before Tversion (p9's server panics): EPROTO.
		{name: "read before Tversion", frames: [][]byte{encode(t, 1, &proto.Tread{FID: 1, Count: 10})}, want: outcome{errno: linux.EPROTO}},
		// An msize below 4096: closed.
		{name: "msize 512", frames: [][]byte{encode(t, proto.NoTag, &proto.Tversion{Msize: 512, Version: proto.Version})}, want: outcome{closed: true}},
		// An unknown version: Rversion "unknown".
		{name: "unknown version", frames: [][]byte{encode(t, proto.NoTag, &proto.Tversion{Msize: 8192, Version: "9P2000.u"})}, want: outcome{check: func(t *testing.T, m proto.Message) {
			if r, ok := m.(*proto.Rversion); !ok || r.Version != "unknown" {
				t.Fatalf("reply %#v", m)
			}
		}}},
		// A Google version suffix is answered with plain 9P2000.L.
		{name: "google version", frames: [][]byte{encode(t, proto.NoTag, &proto.Tversion{Msize: 1 << 30, Version: "9P2000.L.Google.7"})}, want: outcome{check: func(t *testing.T, m proto.Message) {
			if r, ok := m.(*proto.Rversion); !ok || r.Version != proto.Version || r.Msize != DefaultMaxMsize {
				t.Fatalf("reply %#v", m)
			}
		}}},
		// A malformed Tversion: closed.
		{name: "malformed Tversion", frames: [][]byte{rawFrame(proto.TypeTversion, proto.NoTag, []byte{0, 32})}, want: outcome{closed: true}},
		// A second Tversion clunks every fid: the old fid is gone.
		{name: "second Tversion", version: true, attach: true, frames: [][]byte{
			encode(t, proto.NoTag, &proto.Tversion{Msize: 4096, Version: proto.Version}),
			encode(t, 1, &proto.Tgetattr{FID: 1}),
		}, want: outcome{errno: linux.EBADF}},
		// A frame cut short by a hangup: the server sees EOF and cleans up.
		{name: "truncated frame", version: true, attach: true, frames: [][]byte{encode(t, 1, &proto.Tgetattr{FID: 1})[:9]}, want: outcome{closed: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newRaw(t, addr)
			if tc.version {
				c.rpc(proto.NoTag, &proto.Tversion{Msize: 8192, Version: proto.Version})
			}
			if tc.attach {
				c.attach(1)
				c.walk(1, 2, "f")
				c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadOnly})
			}
			for i, f := range tc.frames {
				c.sendFrame(f)
				if i < len(tc.frames)-1 {
					c.recv()
				}
			}
			if tc.name == "truncated frame" {
				c.conn.Close()
			} else if tc.want.closed {
				if !c.closedByServer() {
					t.Fatalf("the server did not close the connection")
				}
			} else {
				_, m := c.recv()
				if tc.want.check != nil {
					tc.want.check(t, m)
				} else if e, ok := m.(*proto.Rlerror); !ok || linux.Errno(e.Ecode) != tc.want.errno {
					t.Fatalf("reply %#v, want Rlerror %v", m, tc.want.errno)
				}
			}
			c.conn.Close()
			// The server still serves.
			ok := versioned(t, addr, 8192)
			ok.attach(1)
			ok.call(&proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll})
			ok.conn.Close()
		})
	}
	waitFor(t, "connections to end", func() bool { return s.Stats() == Stats{} })
	waitFor(t, "Files to close", func() bool { return fs.live.Load() == 0 })
	if n := fs.doubleClose.Load(); n != 0 {
		t.Fatalf("%d double closes", n)
	}
}

func walkBody(fid, newfid proto.FID, names []string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(fid))
	b = binary.LittleEndian.AppendUint32(b, uint32(newfid))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(names)))
	for _, n := range names {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(n)))
		b = append(b, n...)
	}
	return b
}

// TestDuplicateTagClosesConnection proves a tag reused while its request is
// in flight closes the connection (and the in-flight request still finishes
// and releases its File).
func TestDuplicateTagClosesConnection(t *testing.T) {
	fs := newTestFS(t)
	g := make(gate)
	s, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	fs.setHook("GetAttr", g.wait)
	c.send(5, &proto.Tgetattr{FID: 1})
	waitFor(t, "the first request to reach the File", func() bool { return fs.called("GetAttr") == 2 })
	c.send(5, &proto.Tgetattr{FID: 1})
	if !c.closedByServer() {
		t.Fatal("duplicate tag did not close the connection")
	}
	close(g)
	waitFor(t, "the connection to end", func() bool { return s.Stats() == Stats{} })
	waitFor(t, "Files to close", func() bool { return fs.live.Load() == 0 })
	// The server still serves.
	ok := versioned(t, addr, 8192)
	ok.attach(1)
	ok.call(&proto.Tgetattr{FID: 1})
}

// TestFlushOrdering proves Rflush comes only after the flushed request's
// reply, that a flush of a flush waits for that flush, and that a flush of
// a missing tag is answered at once, without waiting for anything.
func TestFlushOrdering(t *testing.T) {
	fs := newTestFS(t)
	g := make(gate)
	s, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	fs.setHook("GetAttr", g.wait)
	c.send(1, &proto.Tgetattr{FID: 1})
	waitFor(t, "the request to block in the File", func() bool { return fs.called("GetAttr") == 2 })
	c.send(2, &proto.Tflush{OldTag: 1})
	c.send(3, &proto.Tflush{OldTag: 1})
	c.send(4, &proto.Tflush{OldTag: 2})
	// Everything above waits: the first reply is the flush of a free tag.
	c.send(9, &proto.Tflush{OldTag: 77})
	if tag, m := c.recv(); tag != 9 || m.Type() != proto.TypeRflush {
		t.Fatalf("first reply: tag %d %v, want Rflush for tag 9", tag, m.Type())
	}
	if st := s.Stats(); st.Inflight != 4 {
		t.Fatalf("in flight %d, want 4 (one request, three flushes)", st.Inflight)
	}
	close(g)
	var order []proto.Tag
	for i := 0; i < 4; i++ {
		tag, m := c.recv()
		if (tag == 1) != (m.Type() == proto.TypeRgetattr) {
			t.Fatalf("tag %d answered with %v", tag, m.Type())
		}
		order = append(order, tag)
	}
	pos := map[proto.Tag]int{}
	for i, tag := range order {
		pos[tag] = i
	}
	if pos[1] != 0 || pos[2] > pos[4] {
		t.Fatalf("reply order %v: want tag 1 first and tag 2 before tag 4", order)
	}
	waitFor(t, "nothing in flight", func() bool { return s.Stats().Inflight == 0 })
}

// TestPanicInFileIsEIO proves a panicking File method costs the request an
// EIO, not the process, and the connection goes on.
func TestPanicInFileIsEIO(t *testing.T) {
	fs := newTestFS(t)
	_, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	fs.setHook("GetAttr", func(*testFile) error { panic("broken attach point") })
	if got := c.errno(&proto.Tgetattr{FID: 1}); got != linux.EIO {
		t.Fatalf("panic answered %v, want EIO", got)
	}
	fs.setHook("GetAttr", nil)
	c.call(&proto.Tgetattr{FID: 1})
	// A panic in Close (connection teardown, no request around) is survived
	// too.
	fs.setHook("Close", func(*testFile) error { panic("broken Close") })
	c.walk(1, 2)
	c.call(&proto.Tclunk{FID: 2})
	c.conn.Close()
	c2 := versioned(t, addr, 8192)
	c2.attach(1)
	fs.setHook("Close", nil)
}

// TestClunkDuringRead proves a Tclunk racing a Tread on the same fid is
// answered at once, and the File is closed exactly once, after the read.
func TestClunkDuringRead(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := make(gate)
	_, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	c.walk(1, 2, "f")
	c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadOnly})
	reading := make(chan *testFile, 1)
	fs.setHook("ReadAt", func(f *testFile) error { reading <- f; return g.wait(f) })
	c.send(1, &proto.Tread{FID: 2, Count: 100})
	file := <-reading
	if r := c.rpc(2, &proto.Tclunk{FID: 2}); r.Type() != proto.TypeRclunk {
		t.Fatalf("clunk answered %v", r.Type())
	}
	if file.isClosed() {
		t.Fatal("File closed while a read was using it")
	}
	close(g)
	if tag, m := c.recv(); tag != 1 || string(m.(*proto.Rread).Data) != "data" {
		t.Fatalf("read reply %d %#v", tag, m)
	}
	waitFor(t, "the File to close", file.isClosed)
	if got := c.errno(&proto.Tread{FID: 2, Count: 1}); got != linux.EBADF {
		t.Fatalf("read after clunk: %v", got)
	}
	if n := fs.doubleClose.Load(); n != 0 {
		t.Fatalf("%d double closes", n)
	}
}
