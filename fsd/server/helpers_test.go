package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// rpcTimeout only keeps a broken test from hanging; nothing is timed.
const rpcTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	// Modes must reach the disk exactly as the File sets them.
	syscall.Umask(0)
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	os.Exit(m.Run())
}

// testLogger logs through t when -v is given, so failures are explained.
func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(testWriter{t})
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// listen returns a unix listener in a fresh directory.
func listen(t testing.TB) net.Listener {
	t.Helper()
	dir, err := os.MkdirTemp("", "fsd-srv")
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

// serve runs fsd's server over r on a fresh socket until the test ends, and
// then checks Serve returned nil.
func serve(t testing.TB, r Router, opts ...Option) (*Server, string) {
	t.Helper()
	// Polling on, as fsd serves: every test over a socket goes through
	// it (a test's own WithBusyPoll(0) turns it off).
	s := New(r, append([]Option{WithLogger(testLogger(t)), WithBusyPoll(DefaultBusyPoll)}, opts...)...)
	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(rpcTimeout):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return s, l.Addr().String()
}

// serveP9 runs p9.NewServer over the same kind of attach point in this
// process. Only for non-race measurements: under -race p9's own WaitGroup
// misuse is reported as a data race (tests compare against a child process,
// see forBoth).
func serveP9(t testing.TB, fs *testFS) string {
	t.Helper()
	s := p9.NewServer(attacher{fs})
	l := listen(t)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// p9Client connects p9's client to addr.
func p9Client(t testing.TB, addr string, msize uint32) *p9.Client {
	t.Helper()
	c, err := p9.NewClient(dial(t, addr), p9.WithMessageSize(msize))
	if err != nil {
		t.Fatalf("p9.NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient speaks frames built with fsd/proto, for what p9's client cannot
// send: hostile input, pipelining, xattrs, full mode bits, Tflush.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

func newRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := dial(t, addr)
	return &rawClient{t: t, conn: c, br: bufio.NewReaderSize(c, 1<<20)}
}

// versioned is newRaw plus a Tversion handshake at msize.
func versioned(t testing.TB, addr string, msize uint32) *rawClient {
	t.Helper()
	c := newRaw(t, addr)
	rv, ok := c.rpc(proto.NoTag, &proto.Tversion{Msize: msize, Version: proto.Version}).(*proto.Rversion)
	if !ok || rv.Version != proto.Version || rv.Msize != msize {
		t.Fatalf("Tversion answered %#v", rv)
	}
	return c
}

func (c *rawClient) sendFrame(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(rpcTimeout))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) send(tag proto.Tag, m proto.Message) {
	c.t.Helper()
	b, err := proto.Append(nil, tag, m)
	if err != nil {
		c.t.Fatalf("encode %v: %v", m.Type(), err)
	}
	c.sendFrame(b)
}

// readFrame reads one whole frame, or returns the read error.
func (c *rawClient) readFrame() ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(rpcTimeout))
	hdr := make([]byte, proto.HeaderSize)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return nil, err
	}
	h, err := proto.ParseHeader(hdr)
	if err != nil {
		return nil, err
	}
	f := make([]byte, h.Size)
	copy(f, hdr)
	if _, err := io.ReadFull(c.br, f[proto.HeaderSize:]); err != nil {
		return nil, err
	}
	return f, nil
}

func (c *rawClient) recv() (proto.Tag, proto.Message) {
	c.t.Helper()
	f, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	tag, m, err := proto.Decode(f)
	if err != nil {
		c.t.Fatalf("decode reply % x: %v", f, err)
	}
	return tag, m
}

// rpc sends m with tag and returns the reply, which must carry the tag.
func (c *rawClient) rpc(tag proto.Tag, m proto.Message) proto.Message {
	c.t.Helper()
	c.send(tag, m)
	got, r := c.recv()
	if got != tag {
		c.t.Fatalf("%v: reply %v has tag %d, want %d", m.Type(), r.Type(), got, tag)
	}
	return r
}

// call is rpc with tag 1 that fails the test on an Rlerror.
func (c *rawClient) call(m proto.Message) proto.Message {
	c.t.Helper()
	r := c.rpc(1, m)
	if e, ok := r.(*proto.Rlerror); ok {
		c.t.Fatalf("%v failed: %v", m.Type(), linux.Errno(e.Ecode))
	}
	return r
}

// errno is rpc with tag 1 returning the Rlerror's errno, 0 for success.
func (c *rawClient) errno(m proto.Message) linux.Errno {
	c.t.Helper()
	if e, ok := c.rpc(1, m).(*proto.Rlerror); ok {
		return linux.Errno(e.Ecode)
	}
	return 0
}

// closedByServer reports whether the server closed the connection (reads
// end with EOF or a reset) rather than answering.
func (c *rawClient) closedByServer() bool {
	c.t.Helper()
	f, err := c.readFrame()
	if err == nil {
		c.t.Logf("server answered % x", f)
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

// attach attaches fid to the root export.
func (c *rawClient) attach(fid proto.FID) {
	c.t.Helper()
	c.call(&proto.Tattach{FID: fid, Afid: proto.NoFID, Uname: "root", NUname: 0})
}

// walk walks fid to newfid through names.
func (c *rawClient) walk(fid, newfid proto.FID, names ...string) {
	c.t.Helper()
	c.call(&proto.Twalk{FID: fid, NewFID: newfid, Names: names})
}

// waitFor polls cond until it holds; the deadline only bounds a broken test.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rpcTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
