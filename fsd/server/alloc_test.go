package server

import (
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// roundTripper sends one pre-encoded request at a time and reads the reply
// into a fixed buffer: the client side allocates nothing, so allocation
// counts around it are the server's.
type roundTripper struct {
	t     testing.TB
	c     *rawClient
	frame []byte
	buf   []byte
}

func (r *roundTripper) once() {
	if _, err := r.c.conn.Write(r.frame); err != nil {
		r.t.Fatal(err)
	}
	if _, err := io.ReadFull(r.c.br, r.buf[:proto.HeaderSize]); err != nil {
		r.t.Fatal(err)
	}
	size := binary.LittleEndian.Uint32(r.buf)
	if _, err := io.ReadFull(r.c.br, r.buf[proto.HeaderSize:size]); err != nil {
		r.t.Fatal(err)
	}
	if proto.MsgType(r.buf[4]) == proto.TypeRlerror {
		r.t.Fatalf("request failed: errno %d", binary.LittleEndian.Uint32(r.buf[proto.HeaderSize:]))
	}
}

// measure returns allocations and bytes allocated per round trip.
func (r *roundTripper) measure(n int) (allocs, bytes float64) {
	for i := 0; i < 100; i++ {
		r.once()
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		r.once()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}

func newRoundTripper(t testing.TB, addr string, msize uint32, m proto.Message) *roundTripper {
	c := versioned(t, addr, msize)
	c.attach(1)
	c.walk(1, 2, "f")
	c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadWrite})
	return &roundTripper{t: t, c: c, frame: encode(t, 1, m), buf: make([]byte, msize)}
}

// TestRegressionAllocations: p9 costs about a dozen allocations per small
// request (a channel per tag among them) and a fresh payload buffer per
// Twrite. fsd pools its requests and buffers and hands Twrite payloads to
// the File from the frame. sync.Pool drops items at random under -race, so
// the numbers are only asserted in normal builds.
func TestRegressionAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("-race: sync.Pool drops items on purpose, allocation counts mean nothing")
	}
	const msize = 1 << 20
	payload := make([]byte, 512<<10)
	type result struct{ getattr, write, writeBytes float64 }
	results := map[serverKind]result{}
	// Both servers run in this process, to be measured: p9's in-process
	// races do not matter in a non-race build.
	for _, k := range []serverKind{fsdServer, p9Server} {
		fs := newTestFS(t)
		mustWrite(t, fs.path("f"), "")
		addr := serveInProcess(t, k, fs)
		g, _ := newRoundTripper(t, addr, msize, &proto.Tgetattr{FID: 2, Mask: p9.AttrMaskAll}).measure(2000)
		w, wb := newRoundTripper(t, addr, msize, &proto.Twrite{FID: 2, Data: payload}).measure(200)
		results[k] = result{g, w, wb}
		t.Logf("%s: %.1f allocs per Tgetattr; %.1f allocs and %.0f bytes per 512 KiB Twrite", k, g, w, wb)
	}
	ours, theirs := results[fsdServer], results[p9Server]
	// Bounds with room for runtime noise; the point is the order of
	// magnitude against p9, measured in the same run.
	if ours.getattr > 1 || ours.getattr*5 > theirs.getattr {
		t.Errorf("allocations per Tgetattr: fsd %.1f, p9 %.1f", ours.getattr, theirs.getattr)
	}
	if ours.writeBytes > 16<<10 || theirs.writeBytes < float64(len(payload)) {
		t.Errorf("bytes allocated per 512 KiB Twrite: fsd %.0f, p9 %.0f", ours.writeBytes, theirs.writeBytes)
	}
}

// benchServers runs a benchmark body against each server.
func benchServers(b *testing.B, body func(b *testing.B, addr string)) {
	for _, k := range []serverKind{fsdServer, p9Server} {
		b.Run(string(k), func(b *testing.B) {
			fs := newTestFS(b)
			if err := os.WriteFile(fs.path("f"), make([]byte, 1<<20), 0o644); err != nil {
				b.Fatal(err)
			}
			body(b, serveInProcess(b, k, fs))
		})
	}
}

// BenchmarkGetattr is a small-request round trip.
func BenchmarkGetattr(b *testing.B) {
	benchServers(b, func(b *testing.B, addr string) {
		rt := newRoundTripper(b, addr, 1<<20, &proto.Tgetattr{FID: 2, Mask: p9.AttrMaskAll})
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rt.once()
		}
	})
}

// BenchmarkRead1M reads 1 MiB per request (msize 1 MiB + header room is not
// available, so 1 MiB - 11 bytes).
func BenchmarkRead1M(b *testing.B) {
	benchServers(b, func(b *testing.B, addr string) {
		rt := newRoundTripper(b, addr, 1<<20, &proto.Tread{FID: 2, Count: 1<<20 - proto.IOHeaderSize})
		b.SetBytes(1<<20 - proto.IOHeaderSize)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rt.once()
		}
	})
}

// BenchmarkWrite512K writes 512 KiB per request.
func BenchmarkWrite512K(b *testing.B) {
	benchServers(b, func(b *testing.B, addr string) {
		rt := newRoundTripper(b, addr, 1<<20, &proto.Twrite{FID: 2, Data: make([]byte, 512<<10)})
		b.SetBytes(512 << 10)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rt.once()
		}
	})
}

// serveInProcess runs either server over fs in this process.
func serveInProcess(t testing.TB, k serverKind, fs *testFS) string {
	if k == fsdServer {
		_, addr := serve(t, fs)
		return addr
	}
	return serveP9(t, fs)
}

// BenchmarkWalkClunk is a Twalk to a new fid and its Tclunk: the fid table
// work of every lookup a guest makes.
func BenchmarkWalkClunk(b *testing.B) {
	benchServers(b, func(b *testing.B, addr string) {
		walk := newRoundTripper(b, addr, 1<<20, &proto.Twalk{FID: 1, NewFID: 3, Names: []string{"f"}})
		clunk := &roundTripper{t: b, c: walk.c, frame: encode(b, 1, &proto.Tclunk{FID: 3}), buf: walk.buf}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			walk.once()
			clunk.once()
		}
	})
}
