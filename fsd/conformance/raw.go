package conformance

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// The raw-frame helper speaks the few 9P2000.L messages p9's client cannot
// send: xattrs, Tlock with a fid (p9's client leaves the fid at 0),
// Tgetlock, Tflush, and Tlcreate/Tmkdir/Tsetattr with setuid and setgid
// bits (p9's client masks modes with 01777), and Tattach with a numeric
// uid. Frames are little-endian: size[4] type[1] tag[2] body.

// Message types (9P2000.L).
const (
	msgRlerror      = 7
	msgTlopen       = 12
	msgTlcreate     = 14
	msgTsetattr     = 26
	msgTxattrwalk   = 30
	msgTxattrcreate = 32
	msgTlock        = 52
	msgTgetlock     = 54
	msgTmkdir       = 72
	msgTversion     = 100
	msgTattach      = 104
	msgTflush       = 108
	msgTwalk        = 110
	msgTread        = 116
	msgTwrite       = 118
	msgTclunk       = 120
	msgTgetattr     = 24

	noTag   = 0xffff
	noFID   = 0xffffffff
	rawTag  = 1
	maxSize = 1 << 20
)

// Tsetattr valid bits.
const (
	setattrMode      = 0x1
	setattrUID       = 0x2
	setattrGID       = 0x4
	setattrSize      = 0x8
	setattrATime     = 0x10
	setattrMTime     = 0x20
	setattrATimeSet  = 0x80
	setattrMTimeSet  = 0x100
	xattrFlagReplace = 2
)

// enc builds a message body.
type enc []byte

func (e *enc) u8(v uint8)   { *e = append(*e, v) }
func (e *enc) u16(v uint16) { *e = binary.LittleEndian.AppendUint16(*e, v) }
func (e *enc) u32(v uint32) { *e = binary.LittleEndian.AppendUint32(*e, v) }
func (e *enc) u64(v uint64) { *e = binary.LittleEndian.AppendUint64(*e, v) }
func (e *enc) str(s string) { e.u16(uint16(len(s))); *e = append(*e, s...) }

// dec reads a reply body; reading past the end marks it short.
type dec struct {
	b     []byte
	short bool
}

func (d *dec) take(n int) []byte {
	if len(d.b) < n {
		d.short = true
		d.b = nil
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
func (d *dec) u8() uint8   { return d.take(1)[0] }
func (d *dec) u16() uint16 { return binary.LittleEndian.Uint16(d.take(2)) }
func (d *dec) u32() uint32 { return binary.LittleEndian.Uint32(d.take(4)) }
func (d *dec) u64() uint64 { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *dec) str() string { return string(d.take(int(d.u16()))) }
func (d *dec) qid() p9.QID {
	return p9.QID{Type: p9.QIDType(d.u8()), Version: d.u32(), Path: d.u64()}
}

// rawConn is one 9P connection driven frame by frame.
type rawConn struct {
	t     *testing.T
	c     net.Conn
	msize uint32
}

// dialRaw connects and negotiates plain "9P2000.L". The connection is
// closed at the end of the test.
func dialRaw(t *testing.T, sock string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, msize: 64 << 10}
	var b enc
	b.u32(r.msize)
	b.str("9P2000.L")
	if err := r.send(msgTversion, noTag, b); err != nil {
		t.Fatalf("Tversion: %v", err)
	}
	typ, _, body, err := r.recv()
	if err != nil || typ != msgTversion+1 {
		t.Fatalf("Rversion: type %d, %v", typ, err)
	}
	d := dec{b: body}
	msize, version := d.u32(), d.str()
	if d.short || version != "9P2000.L" || msize < 8192 {
		t.Fatalf("Rversion: msize %d version %q", msize, version)
	}
	r.msize = min(r.msize, msize)
	return r
}

// send writes one frame.
func (r *rawConn) send(typ uint8, tag uint16, body []byte) error {
	frame := make([]byte, 7, 7+len(body))
	binary.LittleEndian.PutUint32(frame, uint32(7+len(body)))
	frame[4] = typ
	binary.LittleEndian.PutUint16(frame[5:], tag)
	frame = append(frame, body...)
	r.c.SetWriteDeadline(time.Now().Add(rpcTimeout))
	_, err := r.c.Write(frame)
	return err
}

// recv reads one frame.
func (r *rawConn) recv() (uint8, uint16, []byte, error) {
	r.c.SetReadDeadline(time.Now().Add(rpcTimeout))
	var hdr [7]byte
	if _, err := io.ReadFull(r.c, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size < 7 || size > maxSize {
		return 0, 0, nil, fmt.Errorf("frame size %d", size)
	}
	body := make([]byte, size-7)
	if _, err := io.ReadFull(r.c, body); err != nil {
		return 0, 0, nil, err
	}
	return hdr[4], binary.LittleEndian.Uint16(hdr[5:]), body, nil
}

// rpc sends a request and returns the body of its reply, or the
// linux.Errno of an Rlerror. A transport failure fails the test.
func (r *rawConn) rpc(typ uint8, body []byte) (*dec, error) {
	r.t.Helper()
	if err := r.send(typ, rawTag, body); err != nil {
		r.t.Fatalf("send type %d: %v", typ, err)
	}
	rtyp, tag, rbody, err := r.recv()
	if err != nil {
		r.t.Fatalf("reply to type %d: %v", typ, err)
	}
	if tag != rawTag {
		r.t.Fatalf("reply to type %d has tag %d", typ, tag)
	}
	d := &dec{b: rbody}
	if rtyp == msgRlerror {
		return nil, linux.Errno(d.u32())
	}
	if rtyp != typ+1 {
		r.t.Fatalf("reply to type %d has type %d", typ, rtyp)
	}
	return d, nil
}

func (r *rawConn) attach(fid uint32, aname string, uid uint32) (p9.QID, error) {
	var b enc
	b.u32(fid)
	b.u32(noFID)
	b.str("")
	b.str(aname)
	b.u32(uid)
	d, err := r.rpc(msgTattach, b)
	if err != nil {
		return p9.QID{}, err
	}
	return d.qid(), nil
}

func (r *rawConn) walk(fid, newfid uint32, names ...string) ([]p9.QID, error) {
	var b enc
	b.u32(fid)
	b.u32(newfid)
	b.u16(uint16(len(names)))
	for _, n := range names {
		b.str(n)
	}
	d, err := r.rpc(msgTwalk, b)
	if err != nil {
		return nil, err
	}
	qids := make([]p9.QID, d.u16())
	for i := range qids {
		qids[i] = d.qid()
	}
	return qids, nil
}

func (r *rawConn) lopen(fid, flags uint32) error {
	var b enc
	b.u32(fid)
	b.u32(flags)
	_, err := r.rpc(msgTlopen, b)
	return err
}

func (r *rawConn) lcreate(fid uint32, name string, flags, mode, gid uint32) (p9.QID, error) {
	var b enc
	b.u32(fid)
	b.str(name)
	b.u32(flags)
	b.u32(mode)
	b.u32(gid)
	d, err := r.rpc(msgTlcreate, b)
	if err != nil {
		return p9.QID{}, err
	}
	return d.qid(), nil
}

func (r *rawConn) mkdir(dfid uint32, name string, mode, gid uint32) (p9.QID, error) {
	var b enc
	b.u32(dfid)
	b.str(name)
	b.u32(mode)
	b.u32(gid)
	d, err := r.rpc(msgTmkdir, b)
	if err != nil {
		return p9.QID{}, err
	}
	return d.qid(), nil
}

// rawSetattr is the body of Tsetattr.
type rawSetattr struct {
	valid, mode, uid, gid          uint32
	size, asec, ansec, msec, mnsec uint64
}

func (r *rawConn) setattr(fid uint32, s rawSetattr) error {
	var b enc
	b.u32(fid)
	b.u32(s.valid)
	b.u32(s.mode)
	b.u32(s.uid)
	b.u32(s.gid)
	b.u64(s.size)
	b.u64(s.asec)
	b.u64(s.ansec)
	b.u64(s.msec)
	b.u64(s.mnsec)
	_, err := r.rpc(msgTsetattr, b)
	return err
}

func (r *rawConn) xattrwalk(fid, newfid uint32, name string) (uint64, error) {
	var b enc
	b.u32(fid)
	b.u32(newfid)
	b.str(name)
	d, err := r.rpc(msgTxattrwalk, b)
	if err != nil {
		return 0, err
	}
	return d.u64(), nil
}

func (r *rawConn) xattrcreate(fid uint32, name string, size uint64, flags uint32) error {
	var b enc
	b.u32(fid)
	b.str(name)
	b.u64(size)
	b.u32(flags)
	_, err := r.rpc(msgTxattrcreate, b)
	return err
}

func (r *rawConn) read(fid uint32, off uint64, count uint32) ([]byte, error) {
	var b enc
	b.u32(fid)
	b.u64(off)
	b.u32(count)
	d, err := r.rpc(msgTread, b)
	if err != nil {
		return nil, err
	}
	n := d.u32()
	return d.take(int(n)), nil
}

func (r *rawConn) write(fid uint32, off uint64, data []byte) (uint32, error) {
	var b enc
	b.u32(fid)
	b.u64(off)
	b.u32(uint32(len(data)))
	b = append(b, data...)
	d, err := r.rpc(msgTwrite, b)
	if err != nil {
		return 0, err
	}
	return d.u32(), nil
}

func (r *rawConn) clunk(fid uint32) error {
	var b enc
	b.u32(fid)
	_, err := r.rpc(msgTclunk, b)
	return err
}

func (r *rawConn) getattrMode(fid uint32) (uint32, error) {
	var b enc
	b.u32(fid)
	b.u64(0x1) // P9_GETATTR_MODE
	d, err := r.rpc(msgTgetattr, b)
	if err != nil {
		return 0, err
	}
	d.u64() // valid
	d.qid()
	return d.u32(), nil
}

func (r *rawConn) lock(fid uint32, typ uint8, flags uint32, start, length uint64, pid uint32, client string) (p9.LockStatus, error) {
	var b enc
	b.u32(fid)
	b.u8(typ)
	b.u32(flags)
	b.u64(start)
	b.u64(length)
	b.u32(pid)
	b.str(client)
	d, err := r.rpc(msgTlock, b)
	if err != nil {
		return 0, err
	}
	return p9.LockStatus(d.u8()), nil
}

// getlockReply is the body of Rgetlock.
type getlockReply struct {
	typ           uint8
	start, length uint64
	pid           uint32
	client        string
}

func (r *rawConn) getlock(fid uint32, typ uint8, start, length uint64, pid uint32, client string) (getlockReply, error) {
	var b enc
	b.u32(fid)
	b.u8(typ)
	b.u64(start)
	b.u64(length)
	b.u32(pid)
	b.str(client)
	d, err := r.rpc(msgTgetlock, b)
	if err != nil {
		return getlockReply{}, err
	}
	return getlockReply{typ: d.u8(), start: d.u64(), length: d.u64(), pid: d.u32(), client: d.str()}, nil
}

// setXattr sets an xattr the way Linux's v9fs does: clone the fid,
// Txattrcreate on the clone, write the value, and clunk (the server
// applies it at the clunk, whose reply carries the result).
func (r *rawConn) setXattr(fid, tmp uint32, name string, value []byte, flags uint32) error {
	if _, err := r.walk(fid, tmp); err != nil {
		return err
	}
	if err := r.xattrcreate(tmp, name, uint64(len(value)), flags); err != nil {
		r.clunk(tmp)
		return err
	}
	if len(value) > 0 {
		if _, err := r.write(tmp, 0, value); err != nil {
			r.clunk(tmp)
			return err
		}
	}
	return r.clunk(tmp)
}

// removeXattr removes an xattr the way Linux's v9fs does: Txattrcreate
// of size 0 with XATTR_REPLACE, then clunk.
func (r *rawConn) removeXattr(fid, tmp uint32, name string) error {
	return r.setXattr(fid, tmp, name, nil, xattrFlagReplace)
}

// getXattr reads an xattr (name) or the name list (""): Txattrwalk to a
// new fid, Tread of the announced size, clunk.
func (r *rawConn) getXattr(fid, tmp uint32, name string) ([]byte, error) {
	size, err := r.xattrwalk(fid, tmp, name)
	if err != nil {
		return nil, err
	}
	defer r.clunk(tmp)
	if size > uint64(r.msize)-64 {
		return nil, fmt.Errorf("xattr %q: size %d over msize", name, size)
	}
	return r.read(tmp, 0, uint32(size))
}
