package bench

import (
	"encoding/binary"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
)

// 9P message types the dialect adapter rewrites (from the 9P2000.L spec).
const (
	msgTlcreate = 14
	msgTversion = 100
	msgTattach  = 104
)

// frameHeaderLen is size[4] type[1] tag[2].
const frameHeaderLen = 7

// copyLimit is the largest piece of an outgoing frame the adapter copies; a
// larger piece (a Twrite payload) is sent from the caller's slice.
const copyLimit = 4096

// noGID is 9P's "no gid" value that hugelgupf/p9's client puts in Tlcreate.
const noGID = ^uint32(0)

// ErrFrameTooLarge is returned by a dialect conn for an outgoing frame whose
// size field is below the header length or beyond maxFrame.
var ErrFrameTooLarge = errors.New("9P frame size out of range")

// maxFrame bounds outgoing frames (p9's own limit is 4 MiB).
const maxFrame = 16 << 20

// dialectConn makes hugelgupf/p9's client speak plain 9P2000.L with a real
// identity, so every target sees the same bytes:
//
//   - Tversion: "9P2000.L.Google.N" becomes "9P2000.L" (diod refuses the
//     suffix, and with it p9's client would use Twalkgetattr and Tucreate,
//     which no other server here knows);
//   - Tattach: n_uname becomes uid (p9's client sends "no uid"; diod looks the
//     attaching uid up);
//   - Tlcreate: gid "no gid" becomes gid (the creating group).
//
// Every other frame passes through unchanged. p9's client writes one frame
// as two or three Write calls (header, body, payload: net.Buffers falls back
// to Write on anything but a *net.Conn); the adapter gathers them and sends
// the frame with one writev, so it costs the client no extra syscall. It
// keeps a reference to a large payload slice only until the frame it belongs
// to is complete, which p9 guarantees within one send under its send lock.
//
// Reads go straight to the socket, and SyscallConn exposes it so p9's
// receive path keeps using recvmsg into its own buffers.
type dialectConn struct {
	// conn is not embedded: an embedded *net.UnixConn would promote net's
	// unexported writeBuffers, and net.Buffers.WriteTo would then bypass
	// Write (and the rewrite) altogether.
	conn     *net.UnixConn
	uid, gid uint32

	own   []byte      // copied bytes of the frame being assembled
	parts []framePart // the frame's pieces in order
	size  int         // the frame's total size once known, else 0
	have  int         // bytes of the frame gathered so far
}

// framePart is one piece of an outgoing frame: a range of own, or a caller's
// slice.
type framePart struct {
	start, end int
	ext        []byte
}

var _ net.Conn = (*dialectConn)(nil)
var _ syscall.Conn = (*dialectConn)(nil)

// newDialectConn wraps c; uid and gid are sent as the attaching identity.
func newDialectConn(c *net.UnixConn, uid, gid uint32) *dialectConn {
	return &dialectConn{conn: c, uid: uid, gid: gid, own: make([]byte, 0, 256)}
}

// Read implements net.Conn.Read.
func (c *dialectConn) Read(p []byte) (int, error) { return c.conn.Read(p) }

// Close implements net.Conn.Close.
func (c *dialectConn) Close() error { return c.conn.Close() }

// LocalAddr implements net.Conn.LocalAddr.
func (c *dialectConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr implements net.Conn.RemoteAddr.
func (c *dialectConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline implements net.Conn.SetDeadline.
func (c *dialectConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline implements net.Conn.SetReadDeadline.
func (c *dialectConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.SetWriteDeadline.
func (c *dialectConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// SyscallConn implements syscall.Conn: p9's receive path reads frames
// with recvmsg straight into its buffers through it.
func (c *dialectConn) SyscallConn() (syscall.RawConn, error) { return c.conn.SyscallConn() }

// Write gathers p into the current frame and sends every frame it completes.
func (c *dialectConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		take := len(p)
		if c.size == 0 {
			// Until the size is known, copy at most up to the header.
			if need := frameHeaderLen - c.have; take > need {
				take = need
			}
		} else if rest := c.size - c.have; take > rest {
			take = rest
		}
		c.add(p[:take])
		p = p[take:]
		written += take
		if c.size == 0 && c.have >= frameHeaderLen {
			hdr := c.header()
			size := int(binary.LittleEndian.Uint32(hdr))
			if size < frameHeaderLen || size > maxFrame {
				c.reset()
				return written, errors.Wrapf(ErrFrameTooLarge, "outgoing frame of %d bytes", size)
			}
			c.size = size
		}
		if c.size != 0 && c.have == c.size {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// add appends one piece to the frame being assembled.
func (c *dialectConn) add(p []byte) {
	if len(p) > copyLimit && c.size != 0 && c.frameType() != msgTversion && c.frameType() != msgTattach && c.frameType() != msgTlcreate {
		c.parts = append(c.parts, framePart{ext: p})
	} else {
		start := len(c.own)
		c.own = append(c.own, p...)
		if n := len(c.parts); n > 0 && c.parts[n-1].ext == nil && c.parts[n-1].end == start {
			c.parts[n-1].end = len(c.own)
		} else {
			c.parts = append(c.parts, framePart{start: start, end: len(c.own)})
		}
	}
	c.have += len(p)
}

// header returns the frame's first frameHeaderLen bytes; they are always
// copied (the first part is own bytes).
func (c *dialectConn) header() []byte { return c.own[:frameHeaderLen] }

func (c *dialectConn) frameType() byte { return c.own[4] }

// flush sends the complete frame, rewritten if it is one the dialect
// changes, and resets the assembly state.
func (c *dialectConn) flush() error {
	defer c.reset()
	var bufs net.Buffers
	switch c.frameType() {
	case msgTversion, msgTattach, msgTlcreate:
		// These frames are small and were copied whole.
		bufs = net.Buffers{rewriteFrame(c.own[:c.have], c.uid, c.gid)}
	default:
		bufs = make(net.Buffers, 0, len(c.parts))
		for _, p := range c.parts {
			if p.ext != nil {
				bufs = append(bufs, p.ext)
			} else {
				bufs = append(bufs, c.own[p.start:p.end])
			}
		}
	}
	if _, err := bufs.WriteTo(c.conn); err != nil {
		return errors.Wrap(err, "write 9P frame")
	}
	return nil
}

func (c *dialectConn) reset() {
	c.own = c.own[:0]
	for i := range c.parts {
		c.parts[i] = framePart{}
	}
	c.parts = c.parts[:0]
	c.size, c.have = 0, 0
}

// rewriteFrame returns frame with the dialect's changes applied (see
// dialectConn). A frame it cannot parse is returned unchanged: the server
// then judges it.
func rewriteFrame(frame []byte, uid, gid uint32) []byte {
	body := frame[frameHeaderLen:]
	switch frame[4] {
	case msgTversion:
		// msize[4] version[s]
		if len(body) < 6 {
			return frame
		}
		n := int(binary.LittleEndian.Uint16(body[4:6]))
		if len(body) != 6+n {
			return frame
		}
		version := string(body[6:])
		if !strings.HasPrefix(version, "9P2000.L.") {
			return frame
		}
		const plain = "9P2000.L"
		out := make([]byte, 0, frameHeaderLen+6+len(plain))
		out = binary.LittleEndian.AppendUint32(out, uint32(frameHeaderLen+6+len(plain)))
		out = append(out, frame[4:frameHeaderLen]...)
		out = append(out, body[:4]...)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(plain)))
		return append(out, plain...)
	case msgTattach:
		// fid[4] afid[4] uname[s] aname[s] n_uname[4]
		if len(body) < 4+4+2+2+4 {
			return frame
		}
		binary.LittleEndian.PutUint32(frame[len(frame)-4:], uid)
	case msgTlcreate:
		// fid[4] name[s] flags[4] mode[4] gid[4]
		if len(body) < 4+2+4+4+4 {
			return frame
		}
		if binary.LittleEndian.Uint32(frame[len(frame)-4:]) == noGID {
			binary.LittleEndian.PutUint32(frame[len(frame)-4:], gid)
		}
	}
	return frame
}
