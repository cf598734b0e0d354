package bench

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// 9P reply types the harness reads itself.
const (
	msgRlerror  = 7
	msgRversion = 101
)

// noTag is the tag of Tversion.
const noTag = 0xFFFF

// ErrVersion is returned when a server refuses plain 9P2000.L.
var ErrVersion = errors.New("server refused 9P2000.L")

// dialUnix connects to a unix socket, retrying while the server is not
// listening yet or its backlog is full (diod's is small) until ctx ends.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	delay := time.Millisecond
	for {
		c, err := net.DialUnix("unix", nil, addr)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, os.ErrNotExist) {
			return nil, errors.Wrapf(err, "dial %s", path)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Wrapf(err, "dial %s (gave up: %v)", path, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// negotiateMsize asks the server at path for want bytes with a plain
// "9P2000.L" Tversion on a connection of its own and returns what it grants
// (p9's client never adopts a smaller msize, so the harness learns it first
// and creates the client with it).
func negotiateMsize(ctx context.Context, path string, want uint32) (uint32, error) {
	c, err := dialUnix(ctx, path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	const version = "9P2000.L"
	req := make([]byte, 0, 32)
	req = binary.LittleEndian.AppendUint32(req, uint32(frameHeaderLen+4+2+len(version)))
	req = append(req, msgTversion)
	req = binary.LittleEndian.AppendUint16(req, noTag)
	req = binary.LittleEndian.AppendUint32(req, want)
	req = binary.LittleEndian.AppendUint16(req, uint16(len(version)))
	req = append(req, version...)
	if _, err := c.Write(req); err != nil {
		return 0, errors.Wrapf(err, "send Tversion to %s", path)
	}
	frame, err := readFrame(c, nil, 4096)
	if err != nil {
		return 0, errors.Wrapf(err, "Rversion from %s", path)
	}
	body := frame[frameHeaderLen:]
	switch {
	case frame[4] == msgRlerror && len(body) >= 4:
		return 0, errors.Wrapf(ErrVersion, "%s: Rlerror %d", path, binary.LittleEndian.Uint32(body))
	case frame[4] != msgRversion || len(body) < 6:
		return 0, errors.Wrapf(ErrVersion, "%s: reply type %d", path, frame[4])
	}
	got := binary.LittleEndian.Uint32(body)
	if n := int(binary.LittleEndian.Uint16(body[4:6])); len(body) < 6+n || string(body[6:6+n]) != version {
		return 0, errors.Wrapf(ErrVersion, "%s: answered %q", path, body[6:])
	}
	if got > want {
		got = want
	}
	return got, nil
}

// session is one 9P connection attached to a target's export.
type session struct {
	client *p9.Client
	conn   net.Conn
	root   p9.File
}

// openSession dials ep, negotiates plain 9P2000.L at ep.msize and attaches
// to ep.aname as the harness's own uid and gid.
func openSession(ctx context.Context, ep *endpoint) (*session, error) {
	c, err := dialUnix(ctx, ep.socket)
	if err != nil {
		return nil, err
	}
	conn := newDialectConn(c, uint32(os.Getuid()), uint32(os.Getgid()))
	cl, err := p9.NewClient(conn, p9.WithMessageSize(ep.msize))
	if err != nil {
		conn.Close()
		return nil, errors.Wrapf(err, "9P version with %s", ep.socket)
	}
	root, err := cl.Attach(ep.aname)
	if err != nil {
		conn.Close()
		return nil, errors.Wrapf(err, "attach %q at %s", ep.aname, ep.socket)
	}
	return &session{client: cl, conn: conn, root: root}, nil
}

// Close clunks the root and hangs up.
func (s *session) Close() error {
	err := s.root.Close()
	if cerr := s.conn.Close(); err == nil {
		err = cerr
	}
	return errors.Wrap(err, "close 9P session")
}

// walkOpen walks from the root to name and opens it with flags.
func (s *session) walkOpen(name string, flags p9.OpenFlags) (p9.File, error) {
	_, f, err := s.root.Walk([]string{name})
	if err != nil {
		return nil, errors.Wrapf(err, "walk %s", name)
	}
	if _, _, err := f.Open(flags); err != nil {
		_ = f.Close()
		return nil, errors.Wrapf(err, "open %s", name)
	}
	return f, nil
}
