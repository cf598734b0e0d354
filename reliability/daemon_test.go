package reliability

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// settle is how long a daemon is left alone, once its descriptors are back
// at their baseline, before its goroutines are counted: a connection's
// goroutine closes the fids' descriptors a few instructions before it
// returns. It is a wait before a measurement, not a bound on anything.
const settle = 200 * time.Millisecond

// warmUp serves one connection, waits for the daemon's descriptors to
// come back, and returns that count: the daemon's baseline.
func warmUp(t *testing.T, d *daemon, sock string) int {
	t.Helper()
	base := fdCount(t, d.PID)
	c := session(t, sock, 8192)
	c.must(t, &proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll})
	c.close()
	waitFDs(t, d.PID, base, "after a warm-up connection")
	return base
}

// idle holds the goroutines of an idle daemon (see idleGoroutines).
var idle struct {
	once sync.Once
	gs   []string
}

// idleGoroutines returns the goroutines running the program's code in a
// daemon that served one connection and is idle again, sorted. It is
// measured once, on a daemon of its own (a goroutine dump ends the
// process).
func idleGoroutines(t *testing.T) []string {
	t.Helper()
	idle.once.Do(func() {
		s := newSetup(t, "", "")
		d := startDaemon(t, s)
		warmUp(t, d, s.sock)
		time.Sleep(settle)
		gs := d.quit(t, s.logFile())
		slices.Sort(gs)
		idle.gs = gs
		if r := cli(t, d.stopArgs()...); r.code != 0 {
			t.Errorf("stop after the goroutine dump: exit %d\n%s", r.code, r.stderr)
		}
	})
	if idle.gs == nil {
		t.Fatal("measuring an idle daemon's goroutines failed earlier")
	}
	return idle.gs
}

// checkGoroutines ends the daemon with a goroutine dump and compares the
// goroutines running the program's code with an idle daemon's: a leaked
// connection, request or reader goroutine shows up as an extra line.
// Then `stop` cleans up after the daemon, which has exited.
func checkGoroutines(t *testing.T, d *daemon, s *setup) {
	t.Helper()
	want := idleGoroutines(t)
	time.Sleep(settle)
	got := d.quit(t, s.logFile())
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("goroutines after the test (%d):\n\t%s\nan idle daemon's (%d):\n\t%s",
			len(got), strings.Join(got, "\n\t"), len(want), strings.Join(want, "\n\t"))
	}
	t.Logf("goroutines running fsd's code at the end: %d, as in an idle daemon", len(got))
	if r := cli(t, d.stopArgs()...); r.code != 0 {
		t.Fatalf("stop after the goroutine dump: exit %d\n%s", r.code, r.stderr)
	}
}

// pipeline sends msgs with tags 1..n from another goroutine while this one
// reads the n replies, and returns the replies in the order of msgs.
func (c *client) pipeline(msgs []proto.Message) ([]proto.Message, error) {
	if len(msgs) >= int(proto.NoTag) {
		return nil, errors.Errorf("%d requests: more than there are tags", len(msgs))
	}
	sent := make(chan error, 1)
	go func() {
		for i, m := range msgs {
			if err := c.send(proto.Tag(i+1), m); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	out := make([]proto.Message, len(msgs))
	for range msgs {
		tag, m, err := c.recv()
		if err == nil && (tag == 0 || int(tag) > len(msgs) || out[tag-1] != nil) {
			err = errors.Errorf("reply %v with unexpected tag %d", m.Type(), tag)
		}
		if err != nil {
			c.close() // unblocks the sender
			<-sent
			return nil, err
		}
		out[tag-1] = m
	}
	return out, <-sent
}

// noErrors fails the test if any reply is an Rlerror.
func noErrors(t *testing.T, what string, replies []proto.Message) {
	t.Helper()
	for i, r := range replies {
		if e, ok := r.(*proto.Rlerror); ok {
			t.Fatalf("%s: request %d failed: %v", what, i+1, linux.Errno(e.Ecode))
		}
	}
}

// TestItem08DisconnectsLeakNothing proves issue item 8: "A client
// disconnects mid-write, mid-readdir, and with 10,000 fids open: the
// daemon's open fd count returns to its baseline and its goroutine count
// does not grow."
func TestItem08DisconnectsLeakNothing(t *testing.T) {
	const fids = 10000
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max < 2*fids {
		t.Skipf("RLIMIT_NOFILE hard limit %d: the daemon could not hold %d fids", rl.Max, fids)
	}
	s := newSetup(t, "", "")
	big := bytes.Repeat([]byte{'x'}, 1<<20)
	if err := os.WriteFile(filepath.Join(s.shared, "f"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory whose listing takes several Treaddir replies.
	dir := filepath.Join(s.shared, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("entry-%05d", i)), "")
	}
	d := startDaemon(t, s)
	base := warmUp(t, d, s.sock)
	before := procMemory(t, d.PID)

	tests := []struct {
		name string
		// hangUp does something on a connection and closes it abruptly.
		hangUp func(t *testing.T)
	}{
		// A Twrite frame cut in half: the daemon is reading its body
		// when the client goes.
		{"mid-write: half a frame", func(t *testing.T) {
			c := session(t, s.sock, 1<<20)
			if err := c.open(2, p9.ReadWrite, "f"); err != nil {
				t.Fatal(err)
			}
			frame := encode(t, 1, &proto.Twrite{FID: 2, Data: big[:512<<10]})
			if err := c.sendFrame(frame[:len(frame)/2]); err != nil {
				t.Fatal(err)
			}
			c.close()
		}},
		// 100 writes of 64 KiB whose replies are never read: the daemon
		// is writing replies (or still reading requests) at the hangup.
		{"mid-write: replies unread", func(t *testing.T) {
			c := session(t, s.sock, 1<<20)
			if err := c.open(2, p9.ReadWrite, "f"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 100; i++ {
				if err := c.send(proto.Tag(i+1), &proto.Twrite{FID: 2, Offset: uint64(i) << 16, Data: big[:64<<10]}); err != nil {
					t.Fatal(err)
				}
			}
			c.close()
		}},
		// A Treaddir reply read only in part.
		{"mid-readdir: reply half read", func(t *testing.T) {
			c := session(t, s.sock, 64<<10)
			if err := c.open(2, p9.ReadOnly, "d"); err != nil {
				t.Fatal(err)
			}
			if err := c.send(1, &proto.Treaddir{FID: 2, Count: 64<<10 - proto.IOHeaderSize}); err != nil {
				t.Fatal(err)
			}
			part := make([]byte, 100)
			if _, err := io.ReadFull(c.conn, part); err != nil {
				t.Fatal(err)
			}
			c.close()
		}},
		// 50 listings requested, none read: the daemon is blocked writing
		// replies the client will never take.
		{"mid-readdir: replies unread", func(t *testing.T) {
			c := session(t, s.sock, 64<<10)
			if err := c.open(2, p9.ReadOnly, "d"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				if err := c.send(proto.Tag(i+1), &proto.Treaddir{FID: 2, Count: 64<<10 - proto.IOHeaderSize}); err != nil {
					t.Fatal(err)
				}
			}
			c.close()
		}},
		// 10,000 fids on files of the export, 2,000 of them open, never
		// clunked.
		{"10,000 fids open", func(t *testing.T) {
			c := session(t, s.sock, 64<<10)
			walks := make([]proto.Message, fids)
			for i := range walks {
				walks[i] = &proto.Twalk{FID: 1, NewFID: proto.FID(100 + i), Names: []string{"f"}}
			}
			replies, err := c.pipeline(walks)
			if err != nil {
				t.Fatal(err)
			}
			noErrors(t, "walk", replies)
			t.Logf("after walks: %d fds", fdCount(t, d.PID))
			opens := make([]proto.Message, fids/5)
			for i := range opens {
				opens[i] = &proto.Tlopen{FID: proto.FID(100 + i), Flags: p9.ReadOnly}
			}
			if replies, err = c.pipeline(opens); err != nil {
				t.Fatal(err)
			}
			noErrors(t, "open", replies)
			// The fids hold host descriptors: the count is sensitive.
			n := fdCount(t, d.PID)
			t.Logf("with %d fids (%d open) the daemon holds %d fds, %d at rest", fids, len(opens), n, base)
			if n < base+len(opens) {
				t.Fatalf("%d fds with %d files open", n, len(opens))
			}
			c.close()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.hangUp(t)
			waitFDs(t, d.PID, base, "after the hangup")
			if !d.alive() {
				t.Fatal("the daemon died")
			}
		})
	}
	after := procMemory(t, d.PID)
	t.Logf("daemon before: %v; after: %v", before, after)
	checkGoroutines(t, d, s)
}

// TestItem09ManyConnections proves issue item 9: "1,000 connections opened
// and closed in a row, and 64 at once: all served, no fd growth."
func TestItem09ManyConnections(t *testing.T) {
	const (
		inARow = 1000
		atOnce = 64
	)
	s := newSetup(t, "", "")
	writeFile(t, filepath.Join(s.shared, "f"), "data")
	d := startDaemon(t, s)
	base := warmUp(t, d, s.sock)
	before := procMemory(t, d.PID)

	// use serves one connection's requests: open, read, stat, and (when
	// clean) clunk; it returns what went wrong.
	use := func(c *client, clean bool) error {
		if err := c.open(2, p9.ReadOnly, "f"); err != nil {
			return errors.WithMessage(err, "open")
		}
		b, err := c.read(2, 0, 100)
		if err != nil || string(b) != "data" {
			return errors.Errorf("read %q, %v", b, err)
		}
		if _, err := c.do(&proto.Tgetattr{FID: 2, Mask: p9.AttrMaskAll}); err != nil {
			return errors.WithMessage(err, "getattr")
		}
		if clean {
			for _, fid := range []proto.FID{2, 1} {
				if _, err := c.do(&proto.Tclunk{FID: fid}); err != nil {
					return errors.WithMessage(err, "clunk")
				}
			}
		}
		return nil
	}

	t.Run("1,000 in a row", func(t *testing.T) {
		begin := time.Now()
		for i := 0; i < inARow; i++ {
			c, err := dial(s.sock)
			if err == nil {
				if err = c.handshake(8192); err == nil {
					// Every other client hangs up without clunking.
					err = use(c, i%2 == 0)
				}
				c.close()
			}
			if err != nil {
				t.Fatalf("connection %d: %v", i+1, err)
			}
		}
		t.Logf("%d connections in a row served in %v", inARow, time.Since(begin).Round(time.Millisecond))
		waitFDs(t, d.PID, base, "after 1,000 connections")
	})
	t.Run("64 at once", func(t *testing.T) {
		conns := make([]*client, atOnce)
		for i := range conns {
			conns[i] = session(t, s.sock, 8192)
		}
		errs := make([]error, atOnce)
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = use(c, false)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("connection %d: %v", i+1, err)
			}
		}
		// All 64 are served at the same time: each holds its socket and
		// its open file in the daemon.
		n := fdCount(t, d.PID)
		t.Logf("with %d connections open the daemon holds %d fds, %d at rest", atOnce, n, base)
		if n < base+2*atOnce {
			t.Fatalf("%d fds with %d connections open", n, atOnce)
		}
		for _, c := range conns {
			c.close()
		}
		waitFDs(t, d.PID, base, "after 64 connections at once")
	})
	t.Logf("daemon before: %v; after: %v", before, procMemory(t, d.PID))
	checkGoroutines(t, d, s)
}

// fuzzSeeds reads the FuzzDecode seed corpus of fsd/proto: one valid frame
// of every T message.
func fuzzSeeds(t *testing.T) [][]byte {
	t.Helper()
	dir := filepath.Join("..", "fsd", "proto", "testdata", "fuzz", "FuzzDecode")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// "go test fuzz v1" then one []byte("...") line.
		_, v, ok := strings.Cut(string(b), "\n")
		v = strings.TrimSpace(v)
		if !ok || !strings.HasPrefix(v, "[]byte(") || !strings.HasSuffix(v, ")") {
			t.Fatalf("%s: not a []byte corpus entry", e.Name())
		}
		s, err := strconv.Unquote(v[len("[]byte(") : len(v)-1])
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		out = append(out, []byte(s))
	}
	if len(out) == 0 {
		t.Fatal("empty seed corpus")
	}
	return out
}

// mutate returns a copy of frame with a few bytes changed, inserted or cut,
// the way a fuzzer would; the size field is kept right half of the time.
func mutate(r *rand.Rand, frame []byte) []byte {
	b := slices.Clone(frame)
	for range 1 + r.IntN(4) {
		switch r.IntN(4) {
		case 0, 1: // flip a byte
			if len(b) > 0 {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
		case 2: // insert random bytes
			i := r.IntN(len(b) + 1)
			ins := make([]byte, 1+r.IntN(8))
			for j := range ins {
				ins[j] = byte(r.Uint32())
			}
			b = slices.Insert(b, i, ins...)
		case 3: // cut the tail
			if len(b) > 1 {
				b = b[:r.IntN(len(b))]
			}
		}
	}
	if len(b) >= proto.HeaderSize && r.IntN(2) == 0 {
		le := uint32(len(b))
		b[0], b[1], b[2], b[3] = byte(le), byte(le>>8), byte(le>>16), byte(le>>24)
	}
	return b
}

// TestItem10HostileFrames proves issue item 10: "Hostile frames: garbage; a
// size field of 4 GiB; a size below the header; unknown message types; a
// Tread count past msize; a walk of more than 16 names; an unknown fid; a
// fid reused before clunk; duplicate tags; a flush of a missing tag; a
// second Tversion mid-session. Each gets an error or a closed connection,
// and the daemon keeps serving other connections. The 9P fuzz target runs
// in CI for a bounded time."
func TestItem10HostileFrames(t *testing.T) {
	s := newSetup(t, "", "")
	writeFile(t, filepath.Join(s.shared, "f"), "0123456789")
	big := bytes.Repeat([]byte{'y'}, 1<<20)
	if err := os.WriteFile(filepath.Join(s.shared, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, s)
	base := warmUp(t, d, s.sock)
	before := procMemory(t, d.PID)
	// The bystander: a connection open through every row, with a file
	// open, that must go on being served.
	bystander := serving(t, s.sock, "f", "0123456789")

	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = "f"
	}
	size4G := []byte{0xff, 0xff, 0xff, 0xff, byte(proto.TypeTwrite), 1, 0}
	// Many reads of 64 KiB whose replies are not read keep their tags in
	// flight; the same tags sent again are duplicates.
	var dupTags [][]byte
	for i := 1; i <= 30; i++ {
		dupTags = append(dupTags, encode(t, proto.Tag(i), &proto.Tread{FID: 2, Count: 64<<10 - proto.IOHeaderSize}))
	}
	dupTags = append(dupTags, dupTags...)

	type outcome struct {
		closed bool          // the daemon closes the connection
		errno  linux.Errno   // or answers this Rlerror
		reply  proto.MsgType // or answers with this message
	}
	tests := []struct {
		name  string
		msize uint32 // 0: no Tversion first; else negotiate it, attach fid 1, open fid 2 on "f" (or "big" at 64 KiB)
		// frames are sent in order; the reply to each but the last is
		// read and ignored, unless pipelined (nothing is read).
		frames    [][]byte
		pipelined bool
		want      outcome
	}{
		// Text where a frame should be: its first bytes read as a size
		// field of 542 MB; closed before anything is allocated.
		{"garbage", 0, [][]byte{[]byte("GET / HTTP/1.1\r\nHost: fsd\r\n\r\n")}, false, outcome{closed: true}},
		// A size field of 4 GiB after Tversion: closed.
		{"size 4 GiB", 8192, [][]byte{size4G}, false, outcome{closed: true}},
		// A size field of 3, below the 7-byte header: closed.
		{"size below header", 8192, [][]byte{{3, 0, 0, 0, byte(proto.TypeTclunk), 1, 0}}, false, outcome{closed: true}},
		// A well-framed message of an unknown type: EOPNOTSUPP.
		{"unknown type 99", 8192, [][]byte{rawFrame(99, 1, []byte{1, 2, 3})}, false, outcome{errno: linux.EOPNOTSUPP}},
		// Type 0 (no 9P message has it): EOPNOTSUPP.
		{"unknown type 0", 8192, [][]byte{rawFrame(0, 1, nil)}, false, outcome{errno: linux.EOPNOTSUPP}},
		// A reply type sent as a request: EOPNOTSUPP.
		{"R message as request", 8192, [][]byte{rawFrame(proto.TypeRread, 1, []byte{0, 0, 0, 0})}, false, outcome{errno: linux.EOPNOTSUPP}},
		// A Tread count past msize (p9's server panics on it): EINVAL.
		{"read count past msize", 8192, [][]byte{encode(t, 1, &proto.Tread{FID: 2, Count: 1 << 20})}, false, outcome{errno: linux.EINVAL}},
		// A walk of 17 names: EINVAL, no fid created.
		{"walk of 17 names", 8192, [][]byte{rawFrame(proto.TypeTwalk, 1, walkBody(1, 3, seventeen))}, false, outcome{errno: linux.EINVAL}},
		// An fid never attached or walked: EBADF.
		{"unknown fid", 8192, [][]byte{encode(t, 1, &proto.Tgetattr{FID: 42, Mask: p9.AttrMaskAll})}, false, outcome{errno: linux.EBADF}},
		// Tattach onto a fid in use: EBADF, the fid is not replaced.
		{"fid reused by attach", 8192, [][]byte{encode(t, 1, &proto.Tattach{FID: 1, Afid: proto.NoFID, Uname: "root"})}, false, outcome{errno: linux.EBADF}},
		// Twalk onto a fid in use: EBADF.
		{"fid reused by walk", 8192, [][]byte{encode(t, 1, &proto.Twalk{FID: 1, NewFID: 2})}, false, outcome{errno: linux.EBADF}},
		// Tags reused while their requests are in flight: closed.
		{"duplicate tags", 64 << 10, dupTags, true, outcome{closed: true}},
		// A flush of a tag not in flight: Rflush at once.
		{"flush of a missing tag", 8192, [][]byte{encode(t, 1, &proto.Tflush{OldTag: 77})}, false, outcome{reply: proto.TypeRflush}},
		// A second Tversion mid-session resets it: the old fids are gone.
		{"second Tversion", 8192, [][]byte{
			encode(t, proto.NoTag, &proto.Tversion{Msize: 8192, Version: proto.Version}),
			encode(t, 1, &proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll}),
		}, false, outcome{errno: linux.EBADF}},
		// A second Tversion with an msize below the minimum: closed.
		{"second Tversion, msize 512", 8192, [][]byte{encode(t, proto.NoTag, &proto.Tversion{Msize: 512, Version: proto.Version})}, false, outcome{closed: true}},
		// Anything before Tversion: EPROTO.
		{"attach before Tversion", 0, [][]byte{encode(t, 1, &proto.Tattach{FID: 1, Afid: proto.NoFID})}, false, outcome{errno: linux.EPROTO}},
		// A frame larger than msize: closed before its body is read.
		{"frame past msize", 8192, [][]byte{rawFrame(proto.TypeTwrite, 1, make([]byte, 8192))}, false, outcome{closed: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDial(t, s.sock)
			if tc.msize != 0 {
				if err := c.handshake(tc.msize); err != nil {
					t.Fatal(err)
				}
				name := "f"
				if tc.msize > 8192 {
					name = "big"
				}
				if err := c.open(2, p9.ReadOnly, name); err != nil {
					t.Fatal(err)
				}
			}
			for i, f := range tc.frames {
				if err := c.sendFrame(f); err != nil {
					// A pipelining client may find the connection
					// closed while it still writes: that is the
					// outcome a closing row expects.
					if tc.pipelined && tc.want.closed && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
						break
					}
					t.Fatal(err)
				}
				if !tc.pipelined && i < len(tc.frames)-1 {
					if _, _, err := c.recv(); err != nil {
						t.Fatal(err)
					}
				}
			}
			switch {
			case tc.want.closed:
				if !c.closedByServer() {
					t.Fatal("the daemon did not close the connection")
				}
			default:
				_, m, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				e, isErr := m.(*proto.Rlerror)
				switch {
				case tc.want.errno != 0 && (!isErr || linux.Errno(e.Ecode) != tc.want.errno):
					t.Fatalf("reply %#v, want Rlerror %v", m, tc.want.errno)
				case tc.want.reply != 0 && m.Type() != tc.want.reply:
					t.Fatalf("reply %#v, want %v", m, tc.want.reply)
				}
			}
			c.close()
			// Other connections are served: the one open all along, and a
			// new one.
			if b, err := bystander.read(2, 0, 100); err != nil || string(b) != "0123456789" {
				t.Fatalf("the bystander connection: read %q, %v", b, err)
			}
			serving(t, s.sock, "f", "0123456789").close()
		})
	}
	// The fuzz seed corpus, and 2,000 mutations of it, sent to a live
	// daemon of its own (the frames create, rename and remove files in
	// its export): whatever they do, it keeps serving.
	t.Run("fuzz corpus and mutations", func(t *testing.T) {
		fs := newSetup(t, "", "")
		fd := startDaemon(t, fs)
		fbase := warmUp(t, fd, fs.sock)
		watcher := session(t, fs.sock, 8192)
		seeds := fuzzSeeds(t)
		r := rand.New(rand.NewPCG(6, 10))
		frames := slices.Clone(seeds)
		for range 2000 {
			frames = append(frames, mutate(r, seeds[r.IntN(len(seeds))]))
		}
		var conns int
		for i := 0; i < len(frames); i++ {
			c, err := dial(fs.sock)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.handshake(8192); err != nil {
				c.close()
				t.Fatal(err)
			}
			conns++
			// Replies are drained until the daemon closes the connection:
			// on a frame it refuses, or after the client's end of stream.
			drained := make(chan bool, 1)
			go func() { drained <- c.closedByServer() }()
			for ; i < len(frames); i++ {
				if c.sendFrame(frames[i]) != nil {
					break // closed by the daemon: go on with a new connection
				}
			}
			_ = c.conn.CloseWrite()
			ok := <-drained
			c.close()
			if !ok {
				t.Fatal("a fuzzed connection was neither answered to its end nor closed")
			}
		}
		t.Logf("%d frames over %d connections", len(frames), conns)
		for _, c := range []*client{watcher, session(t, fs.sock, 8192)} {
			c.must(t, &proto.Tgetattr{FID: 1, Mask: p9.AttrMaskAll})
			c.close()
		}
		waitFDs(t, fd.PID, fbase, "after the fuzzed connections")
		checkGoroutines(t, fd, fs)
	})
	// CI runs the codec's fuzz target (FuzzDecode) for a bounded time:
	// `make test` runs `fuzz`, which runs it for FUZZTIME.
	t.Run("make test fuzzes the codec", func(t *testing.T) {
		mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
		if err != nil {
			t.Fatal(err)
		}
		text := string(mk)
		for _, want := range []string{
			"-fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./fsd/proto",
			"\nFUZZTIME  ?= ",
		} {
			if !strings.Contains(text, want) {
				t.Fatalf("the Makefile lacks %q", want)
			}
		}
		var testDeps string
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "test:") {
				testDeps, _, _ = strings.Cut(strings.TrimPrefix(line, "test:"), "##")
			}
		}
		if !slices.Contains(strings.Fields(testDeps), "fuzz") {
			t.Fatalf("`make test` (what CI runs) does not depend on fuzz: %q", testDeps)
		}
	})
	bystander.close()
	waitFDs(t, d.PID, base, "after the hostile connections")
	after := procMemory(t, d.PID)
	t.Logf("daemon before: %v; after: %v", before, after)
	// Nothing was allocated from a size field: the 4 GiB frame did not
	// cost 4 GiB.
	if grew := after.HWM - before.RSS; grew > 64<<10 {
		t.Fatalf("the daemon's peak RSS grew by %d KiB", grew)
	}
	checkGoroutines(t, d, s)
}

// TestItem11HostFaults proves issue item 11: "The export fills up (ENOSPC
// on a small tmpfs), and files are changed or deleted on the host while
// the guest holds them open: the right errno reaches the client; the
// daemon survives."
func TestItem11HostFaults(t *testing.T) {
	requireRoot(t, "mounts a 1 MiB tmpfs as the export")
	s := newSetup(t, "", "")
	if err := unix.Mount("tmpfs", s.shared, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	// Registered before the daemon's cleanup, so it runs after it.
	t.Cleanup(func() {
		if err := unix.Unmount(s.shared, 0); err != nil {
			t.Errorf("unmount the export: %v", err)
			_ = unix.Unmount(s.shared, unix.MNT_DETACH)
		}
	})
	d := startDaemon(t, s)
	c := session(t, s.sock, 64<<10)
	host := func(name string) string { return filepath.Join(s.shared, name) }

	t.Run("ENOSPC", func(t *testing.T) {
		if err := c.walk(1, 10); err != nil {
			t.Fatal(err)
		}
		c.must(t, &proto.Tlcreate{FID: 10, Name: "fill", Flags: p9.WriteOnly, Mode: 0o644})
		chunk := bytes.Repeat([]byte{'z'}, 60<<10)
		var total int
		var werr error
		for total < 4<<20 {
			n, err := c.write(10, uint64(total), chunk)
			total += n
			if err != nil {
				werr = err
				break
			}
		}
		t.Logf("the 1 MiB export took %d bytes before the write failed with %v", total, werr)
		if !errors.Is(werr, linux.ENOSPC) {
			t.Fatalf("writing past the end of the file system: %v, want ENOSPC", werr)
		}
		// The daemon serves on, this connection and others.
		c.must(t, &proto.Tgetattr{FID: 10, Mask: p9.AttrMaskAll})
		c2 := session(t, s.sock, 8192)
		c2.must(t, &proto.Tstatfs{FID: 1})
		c2.close()
		// Freed space is usable again.
		c.must(t, &proto.Tclunk{FID: 10})
		c.must(t, &proto.Tunlinkat{DirFID: 1, Name: "fill"})
		if err := c.walk(1, 10); err != nil {
			t.Fatal(err)
		}
		c.must(t, &proto.Tlcreate{FID: 10, Name: "again", Flags: p9.WriteOnly, Mode: 0o644})
		if n, err := c.write(10, 0, chunk); err != nil || n != len(chunk) {
			t.Fatalf("write after freeing space: %d, %v", n, err)
		}
		c.must(t, &proto.Tclunk{FID: 10})
	})
	t.Run("host truncates an open file", func(t *testing.T) {
		writeFile(t, host("t"), strings.Repeat("t", 8192))
		if err := c.open(20, p9.ReadOnly, "t"); err != nil {
			t.Fatal(err)
		}
		if b, err := c.read(20, 0, 8192); err != nil || len(b) != 8192 {
			t.Fatalf("read %d bytes, %v", len(b), err)
		}
		if err := os.Truncate(host("t"), 10); err != nil {
			t.Fatal(err)
		}
		if b, err := c.read(20, 0, 8192); err != nil || string(b) != "tttttttttt" {
			t.Fatalf("read after truncation to 10: %q, %v; want 10 bytes", b, err)
		}
		if b, err := c.read(20, 4096, 100); err != nil || len(b) != 0 {
			t.Fatalf("read past the new end: %d bytes, %v; want 0", len(b), err)
		}
		c.must(t, &proto.Tclunk{FID: 20})
	})
	t.Run("host unlinks an open file", func(t *testing.T) {
		writeFile(t, host("u"), "before")
		if err := c.open(30, p9.ReadWrite, "u"); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(host("u")); err != nil {
			t.Fatal(err)
		}
		// Unlinked but open: reads, writes and stat go on.
		if b, err := c.read(30, 0, 100); err != nil || string(b) != "before" {
			t.Fatalf("read of the unlinked file: %q, %v", b, err)
		}
		if n, err := c.write(30, 0, []byte("after!")); err != nil || n != 6 {
			t.Fatalf("write to the unlinked file: %d, %v", n, err)
		}
		if b, err := c.read(30, 0, 100); err != nil || string(b) != "after!" {
			t.Fatalf("read back: %q, %v", b, err)
		}
		ra := c.must(t, &proto.Tgetattr{FID: 30, Mask: p9.AttrMaskAll}).(*proto.Rgetattr)
		if ra.Attr.NLink != 0 {
			t.Fatalf("nlink %d, want 0", ra.Attr.NLink)
		}
		// A fresh walk finds nothing.
		if e := c.errno(t, &proto.Twalk{FID: 1, NewFID: 31, Names: []string{"u"}}); e != linux.ENOENT {
			t.Fatalf("walk to the unlinked name: %v, want ENOENT", e)
		}
		c.must(t, &proto.Tclunk{FID: 30})
	})
	t.Run("host renames a held directory", func(t *testing.T) {
		if err := os.Mkdir(host("dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, host("dir/f"), "inside")
		if err := c.walk(1, 40, "dir"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(host("dir"), host("moved")); err != nil {
			t.Fatal(err)
		}
		// The fid follows the directory, not the name.
		if err := c.walk(40, 41, "f"); err != nil {
			t.Fatalf("walk from the renamed directory: %v", err)
		}
		c.must(t, &proto.Tlopen{FID: 41, Flags: p9.ReadOnly})
		if b, err := c.read(41, 0, 100); err != nil || string(b) != "inside" {
			t.Fatalf("read through the renamed directory: %q, %v", b, err)
		}
		if err := c.walk(40, 42); err != nil {
			t.Fatal(err)
		}
		c.must(t, &proto.Tlopen{FID: 42, Flags: p9.ReadOnly})
		rd := c.must(t, &proto.Treaddir{FID: 42, Count: 8192}).(*proto.Rreaddir)
		if !slices.ContainsFunc(rd.Entries, func(e p9.Dirent) bool { return e.Name == "f" }) {
			t.Fatalf("listing of the renamed directory: %v", rd.Entries)
		}
		if e := c.errno(t, &proto.Twalk{FID: 1, NewFID: 43, Names: []string{"dir"}}); e != linux.ENOENT {
			t.Fatalf("walk to the old name: %v, want ENOENT", e)
		}
		for _, fid := range []proto.FID{40, 41, 42} {
			c.must(t, &proto.Tclunk{FID: fid})
		}
	})
	t.Run("host replaces an open file", func(t *testing.T) {
		writeFile(t, host("r"), "old")
		if err := c.open(50, p9.ReadOnly, "r"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, host("r.tmp"), "new content")
		if err := os.Rename(host("r.tmp"), host("r")); err != nil {
			t.Fatal(err)
		}
		// The open fid keeps the old inode; a fresh open gets the new one.
		if b, err := c.read(50, 0, 100); err != nil || string(b) != "old" {
			t.Fatalf("read of the replaced file: %q, %v; want the old content", b, err)
		}
		if err := c.open(51, p9.ReadOnly, "r"); err != nil {
			t.Fatal(err)
		}
		if b, err := c.read(51, 0, 100); err != nil || string(b) != "new content" {
			t.Fatalf("read of a fresh open: %q, %v", b, err)
		}
		c.must(t, &proto.Tclunk{FID: 50})
		c.must(t, &proto.Tclunk{FID: 51})
	})
	if !d.alive() {
		t.Fatal("the daemon died")
	}
	c.close()
	writeFile(t, host("last"), "still serving")
	serving(t, s.sock, "last", "still serving").close()
	d.stop(t)
}

// TestItem12PipelinedWithoutReading proves issue item 12: "A client
// pipelines thousands of requests without reading replies: memory stays
// bounded (cap in-flight requests per connection)." The daemon runs with
// its default in-flight cap (64 requests per connection).
func TestItem12PipelinedWithoutReading(t *testing.T) {
	const (
		requests = 10000
		msize    = 64 << 10
		payload  = msize - proto.TwriteHeaderSize
		// bound is the peak RSS growth allowed: 64 requests in flight
		// hold at most 64 frames and 64 replies of 64 KiB (8 MiB), plus
		// the runtime's slack. Unbounded, the daemon would take in the
		// whole 640 MB pipeline.
		bound = 64 << 20
	)
	s := newSetup(t, "", "")
	data := bytes.Repeat([]byte{'p'}, payload)
	if err := os.WriteFile(filepath.Join(s.shared, "f"), bytes.Repeat(data, 4), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, s)
	base := warmUp(t, d, s.sock)
	c := session(t, s.sock, msize)
	if err := c.open(2, p9.ReadWrite, "f"); err != nil {
		t.Fatal(err)
	}
	before := procMemory(t, d.PID)

	// Half 64 KiB writes (big requests), half 64 KiB reads (big replies),
	// encoded one at a time as they are sent.
	frame := func(buf []byte, i int) []byte {
		tag := proto.Tag(i + 1)
		off := uint64(i%4) * payload
		var m proto.Message = &proto.Tread{FID: 2, Offset: off, Count: payload}
		if i%2 == 0 {
			m = &proto.Twrite{FID: 2, Offset: off, Data: data}
		}
		b, err := proto.Append(buf[:0], tag, m)
		if err != nil {
			panic(err) // well-formed by construction
		}
		return b
	}
	var total int64
	for i := 0; i < requests; i += 2 {
		total += int64(len(frame(nil, i)) + len(frame(nil, i+1)))
	}
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		var buf []byte
		for i := 0; i < requests; i++ {
			buf = frame(buf, i)
			// No deadline: this write blocks for as long as the daemon
			// does not read, which is the point.
			if _, err := c.conn.Write(buf); err != nil {
				done <- err
				return
			}
			sent.Add(int64(len(buf)))
		}
		done <- nil
	}()
	// Wait until the writes stall: the daemon stopped reading.
	last, still := int64(-1), 0
	deadline := time.Now().Add(generous)
	for still < 5 {
		time.Sleep(200 * time.Millisecond)
		if n := sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline never stalled: %d of %d bytes taken", sent.Load(), total)
		}
	}
	stalled := procMemory(t, d.PID)
	t.Logf("%d requests (%d MiB) pipelined; the daemon stopped reading after %.1f MiB", requests, total>>20, float64(last)/(1<<20))
	t.Logf("daemon before: %v; stalled: %v", before, stalled)
	if last >= total {
		t.Fatal("the daemon read the whole pipeline without a reply being read")
	}
	if grew := int64(stalled.HWM-before.RSS) << 10; grew > bound {
		t.Fatalf("the daemon's peak RSS grew by %d MiB (bound %d MiB)", grew>>20, bound>>20)
	}

	// Now read: every request is answered, in full.
	for i := 0; i < requests; i++ {
		tag, m, err := c.recv()
		if err != nil {
			t.Fatalf("reply %d: %v", i+1, err)
		}
		want := int(tag-1)%2 == 0
		switch r := m.(type) {
		case *proto.Rwrite:
			if !want || r.Count != payload {
				t.Fatalf("tag %d: Rwrite of %d", tag, r.Count)
			}
		case *proto.Rread:
			if want || !bytes.Equal(r.Data, data) {
				t.Fatalf("tag %d: Rread of %d bytes", tag, len(r.Data))
			}
		default:
			t.Fatalf("tag %d: %#v", tag, m)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := procMemory(t, d.PID)
	t.Logf("daemon after all replies: %v", after)
	c.close()
	serving(t, s.sock, "f", string(data[:100])).close()
	waitFDs(t, d.PID, base, "after the pipeline")
	checkGoroutines(t, d, s)
}
