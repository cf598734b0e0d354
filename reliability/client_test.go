package reliability

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// rpcTimeout bounds one reply so a broken daemon fails a test instead of
// hanging it.
const rpcTimeout = 20 * time.Second

// client is a raw 9P2000.L client speaking frames built with fsd/proto: it
// can send what a well-behaved client never would (hostile frames,
// pipelines it does not read, half a frame).
type client struct {
	conn *net.UnixConn
	br   *bufio.Reader
}

// dial connects to a daemon's socket.
func dial(sock string) (*client, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, errors.Wrapf(err, "dial %s", sock)
	}
	return &client{conn: c, br: bufio.NewReaderSize(c, 1<<20)}, nil
}

// mustDial is dial for the test goroutine; the connection is closed when
// the test ends.
func mustDial(t testing.TB, sock string) *client {
	t.Helper()
	c, err := dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// session is mustDial plus Tversion at msize and Tattach of fid 1 to the
// root export.
func session(t testing.TB, sock string, msize uint32) *client {
	t.Helper()
	c := mustDial(t, sock)
	if err := c.handshake(msize); err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake negotiates msize and attaches fid 1 to the root export.
func (c *client) handshake(msize uint32) error {
	r, err := c.roundTrip(proto.NoTag, &proto.Tversion{Msize: msize, Version: proto.Version})
	if err != nil {
		return err
	}
	if rv, ok := r.(*proto.Rversion); !ok || rv.Version != proto.Version || rv.Msize != msize {
		return errors.Errorf("Tversion(%d) answered %#v", msize, r)
	}
	_, err = c.do(&proto.Tattach{FID: 1, Afid: proto.NoFID, Uname: "root", NUname: 0})
	return err
}

func (c *client) close() { _ = c.conn.Close() }

// sendFrame writes b.
func (c *client) sendFrame(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(rpcTimeout))
	_, err := c.conn.Write(b)
	return errors.Wrap(err, "write frame")
}

// send encodes m with tag and writes it.
func (c *client) send(tag proto.Tag, m proto.Message) error {
	b, err := proto.Append(nil, tag, m)
	if err != nil {
		return err
	}
	return c.sendFrame(b)
}

// readFrame reads one whole frame.
func (c *client) readFrame() ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(rpcTimeout))
	hdr := make([]byte, proto.HeaderSize)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return nil, err
	}
	h, err := proto.ParseHeader(hdr)
	if err != nil {
		return nil, err
	}
	if h.Size > 16<<20 {
		return nil, errors.Errorf("reply of %d bytes", h.Size)
	}
	f := make([]byte, h.Size)
	copy(f, hdr)
	if _, err := io.ReadFull(c.br, f[proto.HeaderSize:]); err != nil {
		return nil, err
	}
	return f, nil
}

// recv reads and decodes one reply.
func (c *client) recv() (proto.Tag, proto.Message, error) {
	f, err := c.readFrame()
	if err != nil {
		return 0, nil, errors.Wrap(err, "read reply")
	}
	tag, m, err := proto.Decode(f)
	if err != nil {
		return 0, nil, errors.Wrapf(err, "decode reply % x", f)
	}
	return tag, m, nil
}

// roundTrip sends m with tag and returns the reply, which must carry tag.
func (c *client) roundTrip(tag proto.Tag, m proto.Message) (proto.Message, error) {
	if err := c.send(tag, m); err != nil {
		return nil, err
	}
	got, r, err := c.recv()
	if err != nil {
		return nil, errors.WithMessagef(err, "%v", m.Type())
	}
	if got != tag {
		return nil, errors.Errorf("%v: reply %v has tag %d, want %d", m.Type(), r.Type(), got, tag)
	}
	return r, nil
}

// do is roundTrip with tag 1; an Rlerror comes back as its linux.Errno.
func (c *client) do(m proto.Message) (proto.Message, error) {
	r, err := c.roundTrip(1, m)
	if err != nil {
		return nil, err
	}
	if e, ok := r.(*proto.Rlerror); ok {
		return nil, linux.Errno(e.Ecode)
	}
	return r, nil
}

// must is do that fails the test on any error.
func (c *client) must(t testing.TB, m proto.Message) proto.Message {
	t.Helper()
	r, err := c.do(m)
	if err != nil {
		t.Fatalf("%v: %v", m.Type(), err)
	}
	return r
}

// errno is do returning the Rlerror's errno, 0 for success; a transport
// failure fails the test.
func (c *client) errno(t testing.TB, m proto.Message) linux.Errno {
	t.Helper()
	_, err := c.do(m)
	var e linux.Errno
	if err == nil || errors.As(err, &e) {
		return e
	}
	t.Fatalf("%v: %v", m.Type(), err)
	return 0
}

// walk walks fid to newfid through names.
func (c *client) walk(fid, newfid proto.FID, names ...string) error {
	_, err := c.do(&proto.Twalk{FID: fid, NewFID: newfid, Names: names})
	return err
}

// open walks fid 1 (the root) to newfid through names and opens it.
func (c *client) open(newfid proto.FID, flags p9.OpenFlags, names ...string) error {
	if err := c.walk(1, newfid, names...); err != nil {
		return err
	}
	_, err := c.do(&proto.Tlopen{FID: newfid, Flags: flags})
	return err
}

// read reads up to count bytes of open fid at off.
func (c *client) read(fid proto.FID, off uint64, count uint32) ([]byte, error) {
	r, err := c.do(&proto.Tread{FID: fid, Offset: off, Count: count})
	if err != nil {
		return nil, err
	}
	rr, ok := r.(*proto.Rread)
	if !ok {
		return nil, errors.Errorf("Tread answered %v", r.Type())
	}
	return rr.Data, nil
}

// write writes data to open fid at off and returns the count written.
func (c *client) write(fid proto.FID, off uint64, data []byte) (int, error) {
	r, err := c.do(&proto.Twrite{FID: fid, Offset: off, Data: data})
	if err != nil {
		return 0, err
	}
	rw, ok := r.(*proto.Rwrite)
	if !ok {
		return 0, errors.Errorf("Twrite answered %v", r.Type())
	}
	return int(rw.Count), nil
}

// closedByServer reads until the daemon closes the connection, skipping
// replies to requests sent before, and reports whether it did: false when
// the reads time out instead.
func (c *client) closedByServer() bool {
	for {
		_, err := c.readFrame()
		if err == nil {
			continue
		}
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	}
}

// rawFrame builds a frame with any type and body; its size field is right.
func rawFrame(typ proto.MsgType, tag proto.Tag, body []byte) []byte {
	b := make([]byte, proto.HeaderSize, proto.HeaderSize+len(body))
	b = append(b, body...)
	proto.PutHeader(b, uint32(len(b)), typ, tag)
	return b
}

// encode is proto.Append for frames the codec accepts.
func encode(t testing.TB, tag proto.Tag, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Append(nil, tag, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// walkBody is a Twalk body with any number of names (the codec refuses
// more than 16).
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
