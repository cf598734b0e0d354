package server

import (
	"errors"
	"io"
	"math"
	"strings"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// Open flags on the wire (P9_DOTL_*, the Linux x86 values).
const (
	dotlAccMode = 0o3
	dotlTrunc   = 0o1000
	dotlAppend  = 0o2000
	dotlDsync   = 0o10000
	dotlNoatime = 0o1000000
	dotlSync    = 0o4000000
	// openFlagsAllowed are the Tlopen/Tlcreate flags passed to the File.
	// Everything else is stripped: O_CREAT, O_EXCL (creation is Tlcreate's
	// job and always exclusive), O_NOCTTY, O_NONBLOCK, FASYNC, O_LARGEFILE,
	// O_CLOEXEC (meaningless for a host fd the guest never sees),
	// O_DIRECTORY and O_NOFOLLOW (the server checks types itself and fids
	// never follow symlinks), O_DIRECT (the server reads into its own
	// unaligned buffers, as QEMU does it ignores the hint), O_PATH and any
	// unknown bit.
	openFlagsAllowed = dotlAccMode | dotlTrunc | dotlAppend | dotlDsync | dotlNoatime | dotlSync
)

const (
	atRemoveDir  = 0x200 // Tunlinkat's only flag
	xattrCreate  = 1     // XATTR_CREATE
	xattrReplace = 2     // XATTR_REPLACE
	lockFlagsAll = p9.LockFlagsBlock | p9.LockFlagsReclaim
)

// getLocker is the optional interface behind Tgetlock.
type getLocker interface {
	GetLock(t p9.LockType, start, length uint64, pid int, client string) (p9.LockType, uint64, uint64, int, string, error)
}

// remover is the optional interface behind Tremove.
type remover interface {
	Remove() error
}

// handle runs one request and returns its reply frame.
func (c *conn) handle(r *request) []byte {
	var (
		reply []byte
		err   error
	)
	switch r.typ {
	case proto.TypeTattach:
		reply, err = c.tattach(r)
	case proto.TypeTwalk:
		reply, err = c.twalk(r)
	case proto.TypeTlopen:
		reply, err = c.tlopen(r)
	case proto.TypeTlcreate:
		reply, err = c.tlcreate(r)
	case proto.TypeTread:
		reply, err = c.tread(r)
	case proto.TypeTwrite:
		reply, err = c.twrite(r)
	case proto.TypeTclunk:
		reply, err = c.tclunk(r)
	case proto.TypeTremove:
		reply, err = c.tremove(r)
	case proto.TypeTgetattr:
		reply, err = c.tgetattr(r)
	case proto.TypeTsetattr:
		reply, err = c.tsetattr(r)
	case proto.TypeTreaddir:
		reply, err = c.treaddir(r)
	case proto.TypeTstatfs:
		reply, err = c.tstatfs(r)
	case proto.TypeTreadlink:
		reply, err = c.treadlink(r)
	case proto.TypeTfsync:
		reply, err = c.tfsync(r)
	case proto.TypeTmkdir:
		reply, err = c.tmkdir(r)
	case proto.TypeTsymlink:
		reply, err = c.tsymlink(r)
	case proto.TypeTmknod:
		reply, err = c.tmknod(r)
	case proto.TypeTlink:
		reply, err = c.tlink(r)
	case proto.TypeTrename:
		reply, err = c.trename(r)
	case proto.TypeTrenameat:
		reply, err = c.trenameat(r)
	case proto.TypeTunlinkat:
		reply, err = c.tunlinkat(r)
	case proto.TypeTxattrwalk:
		reply, err = c.txattrwalk(r)
	case proto.TypeTxattrcreate:
		reply, err = c.txattrcreate(r)
	case proto.TypeTlock:
		reply, err = c.tlock(r)
	case proto.TypeTgetlock:
		reply, err = c.tgetlock(r)
	default:
		// Tauth: no authentication is offered.
		err = linux.EOPNOTSUPP
	}
	if err != nil {
		return r.errorReply(errnoOf(err))
	}
	return reply
}

// validName accepts a single path element: not empty, not "." or "..", no
// '/', no NUL.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && strings.IndexByte(s, '/') < 0 && strings.IndexByte(s, 0) < 0
}

// Tattach: the router resolves the aname; the fid keeps the attach uid for
// the creations made through it and the fids walked from it.
func (c *conn) tattach(r *request) ([]byte, error) {
	t := &r.t.attach
	if t.Afid != proto.NoFID {
		return nil, linux.EINVAL
	}
	if err := c.checkNewFid(t.FID); err != nil {
		return nil, err
	}
	f, err := c.srv.router.Attach(t.Aname)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, linux.EIO
	}
	owned := f
	defer func() {
		if owned != nil {
			closeFile(owned, c.log)
		}
	}()
	qid, valid, attr, err := f.GetAttr(p9.AttrMask{Mode: true})
	if err != nil {
		return nil, err
	}
	isDir := qid.Type&p9.TypeDir != 0
	if valid.Mode {
		isDir = attr.Mode.IsDir()
	}
	e := newFileFid(f, c.log, isDir, t.NUname)
	if err := c.insertFid(t.FID, e); err != nil {
		return nil, err
	}
	owned = nil
	r.r.attach.QID = qid
	return r.encode(&r.r.attach), nil
}

// Twalk: nwname 0 clones; a walk that stops after the first name answers
// the QIDs walked and creates no fid; newfid == fid replaces the fid's File
// (not allowed once it is open). Walking from an open fid to another fid is
// allowed because the Linux client clones open fids.
func (c *conn) twalk(r *request) ([]byte, error) {
	t := &r.t.walk
	for _, n := range t.Names {
		if !validName(n) {
			return nil, linux.EINVAL
		}
	}
	src, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer src.release()
	replace := t.NewFID == t.FID
	if replace {
		if src.opened {
			return nil, linux.EBUSY
		}
		if len(t.Names) == 0 {
			r.r.walk.QIDs = r.r.walk.QIDs[:0]
			return r.encode(&r.r.walk), nil
		}
	} else if err := c.checkNewFid(t.NewFID); err != nil {
		return nil, err
	}
	if len(t.Names) > 0 && !src.isDir {
		return nil, linux.ENOTDIR
	}
	qids, nf, err := c.walkFile(src.file(), t.Names)
	if err != nil {
		return nil, err
	}
	r.r.walk.QIDs = qids
	if nf == nil {
		return r.encode(&r.r.walk), nil // partial walk
	}
	isDir := src.isDir
	if len(qids) > 0 {
		isDir = qids[len(qids)-1].Type&p9.TypeDir != 0
	}
	if replace {
		e := src.e
		e.mu.Lock()
		if e.clunked || e.kind != fidFile || e.h == nil {
			e.mu.Unlock()
			closeFile(nf, c.log)
			return nil, linux.EBADF
		}
		if e.opened || e.opening {
			e.mu.Unlock()
			closeFile(nf, c.log)
			return nil, linux.EBUSY
		}
		old := e.h
		e.h = newHandle(nf, c.log)
		e.isDir = isDir
		e.mu.Unlock()
		old.decRef()
	} else {
		e := newFileFid(nf, c.log, isDir, src.uid)
		if err := c.insertFid(t.NewFID, e); err != nil {
			e.h.decRef()
			return nil, err
		}
	}
	return r.encode(&r.r.walk), nil
}

// walkFile walks f through names. It returns the File walked to, or, for a
// walk that failed after the first name, the QIDs walked and a nil File; a
// failure at the first name is an error.
func (c *conn) walkFile(f p9.File, names []string) ([]p9.QID, p9.File, error) {
	qids, nf, err := f.Walk(names)
	if err == nil {
		if nf == nil {
			return nil, nil, linux.EIO
		}
		if len(qids) != len(names) {
			closeFile(nf, c.log)
			c.log.Errorf("File.Walk returned %d QIDs for %d names", len(qids), len(names))
			return nil, nil, linux.EIO
		}
		return qids, nf, nil
	}
	if nf != nil {
		closeFile(nf, c.log)
	}
	if len(names) <= 1 {
		return nil, nil, err
	}
	if len(qids) > 0 && len(qids) < len(names) {
		return qids, nil, nil
	}
	return c.walkSteps(f, names)
}

// walkSteps walks one name at a time to find where a multi-name walk stops,
// for Files that report a failed walk without the QIDs walked.
func (c *conn) walkSteps(f p9.File, names []string) ([]p9.QID, p9.File, error) {
	var (
		qids  []p9.QID
		owned p9.File
	)
	defer func() {
		if owned != nil {
			closeFile(owned, c.log)
		}
	}()
	cur := f
	for i, name := range names {
		q, nf, err := cur.Walk([]string{name})
		if err == nil && (nf == nil || len(q) != 1) {
			if nf != nil {
				closeFile(nf, c.log)
			}
			err = linux.EIO
		}
		if err != nil {
			if i == 0 {
				return nil, nil, err
			}
			return qids, nil, nil
		}
		qids = append(qids, q[0])
		if owned != nil {
			closeFile(owned, c.log)
		}
		owned, cur = nf, nf
	}
	// Every step worked this time (the tree changed in between): that is a
	// complete walk.
	nf := owned
	owned = nil
	return qids, nf, nil
}

// beginOpen marks a fid as opening, so that Open/Create runs once and
// nothing replaces the File meanwhile. The caller must call endOpen.
func beginOpen(ref *fidRef) error {
	e := ref.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clunked || e.kind != fidFile || e.h != ref.h {
		return linux.EBADF
	}
	if e.opened || e.opening {
		return linux.EINVAL
	}
	e.opening = true
	return nil
}

// Tlopen: flags are masked to openFlagsAllowed; a directory opens read-only.
func (c *conn) tlopen(r *request) ([]byte, error) {
	t := &r.t.lopen
	flags := t.Flags & openFlagsAllowed
	acc := flags & dotlAccMode
	if acc == dotlAccMode {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if ref.isDir && acc != p9.ReadOnly {
		return nil, linux.EISDIR
	}
	if err := beginOpen(&ref); err != nil {
		return nil, err
	}
	opened := false
	defer func() {
		ref.e.mu.Lock()
		ref.e.opening = false
		if opened {
			ref.e.opened = true
			ref.e.mode = acc
		}
		ref.e.mu.Unlock()
	}()
	qid, iounit, err := ref.file().Open(flags)
	if err != nil {
		return nil, err
	}
	opened = true
	r.r.lopen = proto.Rlopen{QID: qid, IOUnit: iounit}
	return r.encode(&r.r.lopen), nil
}

// Tlcreate: the directory fid becomes the new, open file; the directory's
// File is closed once no request uses it.
func (c *conn) tlcreate(r *request) ([]byte, error) {
	t := &r.t.lcreate
	if !validName(t.Name) {
		return nil, linux.EINVAL
	}
	flags := t.Flags & openFlagsAllowed
	acc := flags & dotlAccMode
	if acc == dotlAccMode {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireDir(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if err := beginOpen(&ref); err != nil {
		return nil, err
	}
	var nf p9.File
	e := ref.e
	defer func() {
		e.mu.Lock()
		e.opening = false
		if nf != nil {
			if e.clunked {
				e.mu.Unlock()
				closeFile(nf, c.log)
				return
			}
			old := e.h
			e.h = newHandle(nf, c.log)
			e.opened = true
			e.mode = acc
			e.isDir = false
			e.mu.Unlock()
			old.decRef()
			return
		}
		e.mu.Unlock()
	}()
	f, qid, iounit, err := ref.file().Create(t.Name, flags, t.Mode, ref.uid, t.GID)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, linux.EIO
	}
	nf = f
	r.r.lcreate = proto.Rlcreate{QID: qid, IOUnit: iounit}
	return r.encode(&r.r.lcreate), nil
}

// checkOffset converts a wire offset to a File offset.
func checkOffset(off uint64) (int64, error) {
	if off > math.MaxInt64 {
		return 0, linux.EINVAL
	}
	return int64(off), nil
}

// Tread: a count above msize is EINVAL; otherwise it is clamped so that the
// Rread fits in msize. The File reads straight into the pooled reply frame.
func (c *conn) tread(r *request) ([]byte, error) {
	t := &r.t.read
	if t.Count > c.msize {
		return nil, linux.EINVAL
	}
	count := t.Count
	if limit := c.msize - proto.IOHeaderSize; count > limit {
		count = limit
	}
	off, err := checkOffset(t.Offset)
	if err != nil {
		return nil, err
	}
	ref, err := c.acquire(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	// The File reads at payloadAlign into the buffer (the kernel copies
	// much faster to an aligned destination); the header goes just before.
	out := r.outBuf(payloadAlign + int(count))
	data := out[payloadAlign:]
	n := 0
	switch {
	case ref.kind == fidXattrRead:
		ref.e.mu.Lock()
		if t.Offset < uint64(len(ref.e.xdata)) {
			n = copy(data, ref.e.xdata[t.Offset:])
		}
		ref.e.mu.Unlock()
	case ref.kind != fidFile || !ref.opened || ref.mode == p9.WriteOnly:
		return nil, linux.EBADF
	case count > 0:
		if fs, ok := ref.file().(FileSplicer); ok && c.rc != nil {
			if frame, ok := c.spliceRead(r, ref.file(), fs, off, int(count)); ok {
				return frame, nil
			}
		}
		n, err = ref.file().ReadAt(data, off)
		if n < 0 || n > len(data) {
			c.log.Errorf("File.ReadAt returned %d for a %d-byte buffer", n, len(data))
			return nil, linux.EIO
		}
		// A short read with an error is a short read; io.EOF is never an
		// error.
		if err != nil && n == 0 && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	frame := out[payloadAlign-proto.IOHeaderSize : payloadAlign+n]
	proto.PutHeader(frame, uint32(len(frame)), proto.TypeRread, r.tag)
	le32(frame[proto.HeaderSize:], uint32(n))
	return frame, nil
}

// Twrite: the payload goes to the File straight from the request frame.
func (c *conn) twrite(r *request) ([]byte, error) {
	t := &r.t.write
	ref, err := c.acquire(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	n := 0
	switch {
	case ref.kind == fidXattrWrite:
		if n, err = appendXattr(ref.e, t.Offset, t.Data); err != nil {
			return nil, err
		}
	case ref.kind != fidFile || !ref.opened || ref.mode == p9.ReadOnly:
		return nil, linux.EBADF
	case len(t.Data) > 0:
		off, err := checkOffset(t.Offset)
		if err != nil {
			return nil, err
		}
		n, err = ref.file().WriteAt(t.Data, off)
		if n < 0 || n > len(t.Data) {
			c.log.Errorf("File.WriteAt returned %d for %d bytes", n, len(t.Data))
			return nil, linux.EIO
		}
		if err != nil && n == 0 {
			return nil, err
		}
	}
	r.r.write.Count = uint32(n)
	return r.encode(&r.r.write), nil
}

// appendXattr adds a Twrite's data to an xattr-write fid: in order, and no
// more than Txattrcreate announced.
func appendXattr(e *fidEntry, off uint64, data []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clunked || e.kind != fidXattrWrite {
		return 0, linux.EBADF
	}
	if off != uint64(len(e.xdata)) {
		return 0, linux.EINVAL
	}
	if uint64(len(e.xdata))+uint64(len(data)) > e.xsize {
		return 0, linux.ENOSPC
	}
	e.xdata = append(e.xdata, data...)
	return len(data), nil
}

// Tclunk forgets the fid; an xattr-write fid stores its attribute first (and
// reports that error, the fid being gone either way).
func (c *conn) tclunk(r *request) ([]byte, error) {
	e, h := c.removeFid(r.t.clunk.FID)
	if e == nil {
		return nil, linux.EBADF
	}
	if h == nil {
		return r.emptyReply(proto.TypeRclunk), nil
	}
	defer h.decRef()
	e.mu.Lock()
	kind, name, data, size, flags := e.kind, e.xname, e.xdata, e.xsize, e.xflags
	e.mu.Unlock()
	if kind == fidXattrWrite {
		if err := setXattr(h.file, name, data, size, flags); err != nil {
			return nil, err
		}
	}
	return r.emptyReply(proto.TypeRclunk), nil
}

// setXattr applies a completed Txattrcreate. Linux sends removexattr(2) as
// Txattrcreate with size 0 and XATTR_REPLACE (the VFS calls the handler with
// a NULL value and XATTR_REPLACE; v9fs forwards size and flags); any other
// size-0 create sets an empty value, as setxattr(2) with size 0 does.
func setXattr(f p9.File, name string, data []byte, size uint64, flags uint32) error {
	if uint64(len(data)) != size {
		return linux.EINVAL
	}
	if size == 0 && flags&xattrReplace != 0 {
		return f.RemoveXattr(name)
	}
	if data == nil {
		data = []byte{}
	}
	return f.SetXattr(name, data, p9.XattrFlags(flags))
}

// Tremove removes the file through the File's optional Remove and always
// clunks the fid.
func (c *conn) tremove(r *request) ([]byte, error) {
	e, h := c.removeFid(r.t.remove.FID)
	if e == nil {
		return nil, linux.EBADF
	}
	if h == nil {
		return nil, linux.EINVAL
	}
	defer h.decRef()
	e.mu.Lock()
	kind := e.kind
	e.mu.Unlock()
	if kind != fidFile {
		return nil, linux.EINVAL
	}
	rm, ok := h.file.(remover)
	if !ok {
		return nil, linux.EOPNOTSUPP
	}
	if err := rm.Remove(); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRremove), nil
}

// Tgetattr passes the mask through.
func (c *conn) tgetattr(r *request) ([]byte, error) {
	t := &r.t.getattr
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	qid, valid, attr, err := ref.file().GetAttr(t.Mask)
	if err != nil {
		return nil, err
	}
	r.r.getattr = proto.Rgetattr{Valid: valid, QID: qid, Attr: attr}
	return r.encode(&r.r.getattr), nil
}

// Tsetattr passes the full mode through: setuid, setgid and sticky arrive as
// sent.
func (c *conn) tsetattr(r *request) ([]byte, error) {
	t := &r.t.setattr
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if err := ref.file().SetAttr(t.Valid, t.Attr); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRsetattr), nil
}

// spliceRead reads count bytes at off for r through a pooled pipe (see
// FileSplicer): the bytes up to the first page boundary are copied with
// ReadAt into the reply after its header (a pipe holds whole pages, and a
// read starting inside one would need a page more), the rest is spliced
// into the pipe, and finish sends it after the header. It returns the
// header and the copied bytes; ok is false when the read must be done
// through a buffer instead (no pipe free, nothing to splice, a short
// copy, or the file system cannot splice).
func (c *conn) spliceRead(r *request, f p9.File, fs FileSplicer, off int64, count int) (frame []byte, ok bool) {
	head := 0
	if mis := int(off % pipePage); mis != 0 {
		head = min(count, pipePage-mis)
	}
	rest := count - head
	if rest == 0 {
		return nil, false
	}
	p := c.getPipe(rest)
	if p == nil {
		return nil, false
	}
	frame = r.outBuf(proto.IOHeaderSize + head)
	if head > 0 {
		if n, _ := f.ReadAt(frame[proto.IOHeaderSize:], off); n != head {
			c.putPipe(p) // the end of the file, or an error: ReadAt says which
			return nil, false
		}
	}
	m, err := fs.SpliceRead(p.w, off+int64(head), rest)
	switch {
	case m < 0 || m > rest:
		c.log.Errorf("File.SpliceRead returned %d for %d bytes", m, rest)
		c.dropPipe(p)
		return nil, false
	case m == 0 && err != nil:
		c.putPipe(p) // no splice here: read through a buffer
		return nil, false
	case m == 0:
		c.putPipe(p) // the end of the file after the copied bytes
	default:
		r.pipe, r.pipeN = p, m
	}
	n := head + m
	proto.PutHeader(frame, uint32(proto.IOHeaderSize+n), proto.TypeRread, r.tag)
	le32(frame[proto.HeaderSize:], uint32(n))
	return frame, true
}

// appendDirents appends the entries f.Readdir returns that fit in count
// bytes, for a File that is no DirentAppender.
func appendDirents(b []byte, f p9.File, offset uint64, count uint32) ([]byte, error) {
	ents, err := f.Readdir(offset, count)
	if err != nil && !errors.Is(err, io.EOF) && len(ents) == 0 {
		return nil, err
	}
	start := len(b)
	for i := range ents {
		if len(b)-start+proto.DirentSize(ents[i].Name) > int(count) {
			break
		}
		if b, err = proto.AppendDirent(b, &ents[i]); err != nil {
			return nil, linux.ENAMETOOLONG
		}
	}
	if len(b) == start && len(ents) > 0 {
		// Not even one entry fits: an empty reply would read as the end of
		// the directory.
		return nil, linux.EINVAL
	}
	return b, nil
}

// DirentAppender is implemented by a File that encodes its directory
// entries straight into the reply (fsd/hostfs does): AppendReaddir appends
// the wire form of the entries Readdir(offset, count) would return, at most
// count bytes, to b. Treaddir then allocates nothing, where Readdir's
// Dirents cost a slice and a string per call, large for a large directory.
type DirentAppender interface {
	AppendReaddir(b []byte, offset uint64, count uint32) ([]byte, error)
}

// Treaddir: the count is clamped to msize-11 and entries are encoded, each
// 24+len(name) bytes, until the next would not fit (by the File itself
// when it is a DirentAppender).
func (c *conn) treaddir(r *request) ([]byte, error) {
	t := &r.t.readdir
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if !ref.opened {
		return nil, linux.EBADF
	}
	if !ref.isDir {
		return nil, linux.ENOTDIR
	}
	count := t.Count
	if limit := c.msize - proto.IOHeaderSize; count > limit {
		count = limit
	}
	out := r.outBuf(proto.IOHeaderSize + int(count))
	b := out[:proto.IOHeaderSize]
	if da, ok := ref.file().(DirentAppender); ok {
		if b, err = da.AppendReaddir(b, t.Offset, count); err != nil {
			return nil, err
		}
	} else if b, err = appendDirents(b, ref.file(), t.Offset, count); err != nil {
		return nil, err
	}
	n := len(b) - proto.IOHeaderSize
	if n > int(count) {
		c.log.Errorf("Treaddir reply of %d bytes exceeds count %d", n, count)
		return nil, linux.EIO
	}
	proto.PutHeader(b, uint32(len(b)), proto.TypeRreaddir, r.tag)
	le32(b[proto.HeaderSize:], uint32(n))
	return b, nil
}

// Tstatfs asks the File.
func (c *conn) tstatfs(r *request) ([]byte, error) {
	ref, err := c.acquireFile(r.t.statfs.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	st, err := ref.file().StatFS()
	if err != nil {
		return nil, err
	}
	r.r.statfs.Stat = st
	return r.encode(&r.r.statfs), nil
}

// Treadlink answers ENAMETOOLONG for a target that cannot fit in a reply.
func (c *conn) treadlink(r *request) ([]byte, error) {
	ref, err := c.acquireFile(r.t.readlink.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	target, err := ref.file().Readlink()
	if err != nil {
		return nil, err
	}
	if len(target) > proto.MaxStringLen || proto.HeaderSize+2+len(target) > int(c.msize) {
		return nil, linux.ENAMETOOLONG
	}
	r.r.readlink.Target = target
	return r.encode(&r.r.readlink), nil
}

// Tfsync needs an open fid.
func (c *conn) tfsync(r *request) ([]byte, error) {
	ref, err := c.acquireFile(r.t.fsync.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if !ref.opened {
		return nil, linux.EBADF
	}
	if err := ref.file().FSync(); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRfsync), nil
}

// Tmkdir passes the full mode and the fid's attach uid.
func (c *conn) tmkdir(r *request) ([]byte, error) {
	t := &r.t.mkdir
	if !validName(t.Name) {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireDir(t.DirFID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	qid, err := ref.file().Mkdir(t.Name, t.Mode, ref.uid, t.GID)
	if err != nil {
		return nil, err
	}
	r.r.mkdir.QID = qid
	return r.encode(&r.r.mkdir), nil
}

// Tsymlink: the target may be any string without NUL.
func (c *conn) tsymlink(r *request) ([]byte, error) {
	t := &r.t.symlink
	if !validName(t.Name) || strings.IndexByte(t.Target, 0) >= 0 {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireDir(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	qid, err := ref.file().Symlink(t.Target, t.Name, ref.uid, t.GID)
	if err != nil {
		return nil, err
	}
	r.r.symlink.QID = qid
	return r.encode(&r.r.symlink), nil
}

// Tmknod passes the full mode; the File decides which node types it makes.
func (c *conn) tmknod(r *request) ([]byte, error) {
	t := &r.t.mknod
	if !validName(t.Name) {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireDir(t.DirFID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	qid, err := ref.file().Mknod(t.Name, t.Mode, t.Major, t.Minor, ref.uid, t.GID)
	if err != nil {
		return nil, err
	}
	r.r.mknod.QID = qid
	return r.encode(&r.r.mknod), nil
}

// Tlink links the file fid names into the directory.
func (c *conn) tlink(r *request) ([]byte, error) {
	t := &r.t.link
	if !validName(t.Name) {
		return nil, linux.EINVAL
	}
	dir, err := c.acquireDir(t.DirFID)
	if err != nil {
		return nil, err
	}
	defer dir.release()
	target, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer target.release()
	if err := dir.file().Link(target.file(), t.Name); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRlink), nil
}

// Trename calls File.Rename on the file itself (p9's server never does).
func (c *conn) trename(r *request) ([]byte, error) {
	t := &r.t.rename
	if !validName(t.Name) {
		return nil, linux.EINVAL
	}
	f, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer f.release()
	dir, err := c.acquireDir(t.DirFID)
	if err != nil {
		return nil, err
	}
	defer dir.release()
	if err := f.file().Rename(dir.file(), t.Name); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRrename), nil
}

// Trenameat renames between two directory fids.
func (c *conn) trenameat(r *request) ([]byte, error) {
	t := &r.t.renameat
	if !validName(t.OldName) || !validName(t.NewName) {
		return nil, linux.EINVAL
	}
	od, err := c.acquireDir(t.OldDirFID)
	if err != nil {
		return nil, err
	}
	defer od.release()
	nd, err := c.acquireDir(t.NewDirFID)
	if err != nil {
		return nil, err
	}
	defer nd.release()
	if err := od.file().RenameAt(t.OldName, nd.file(), t.NewName); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRrenameat), nil
}

// Tunlinkat accepts only AT_REMOVEDIR as a flag.
func (c *conn) tunlinkat(r *request) ([]byte, error) {
	t := &r.t.unlinkat
	if !validName(t.Name) || t.Flags&^atRemoveDir != 0 {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireDir(t.DirFID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if err := ref.file().UnlinkAt(t.Name, t.Flags); err != nil {
		return nil, err
	}
	return r.emptyReply(proto.TypeRunlinkat), nil
}

// Txattrwalk reads the value (or the NUL-terminated name list) now; the new
// fid holds the bytes, not the File. Errors pass through unchanged.
func (c *conn) txattrwalk(r *request) ([]byte, error) {
	t := &r.t.xattrwalk
	if strings.IndexByte(t.Name, 0) >= 0 {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if err := c.checkNewFid(t.NewFID); err != nil {
		return nil, err
	}
	var data []byte
	if t.Name == "" {
		names, err := ref.file().ListXattrs()
		if err != nil {
			return nil, err
		}
		size := 0
		for _, n := range names {
			size += len(n) + 1
		}
		if size > xattrMax {
			return nil, linux.E2BIG
		}
		data = make([]byte, 0, size)
		for _, n := range names {
			data = append(append(data, n...), 0)
		}
	} else {
		if data, err = ref.file().GetXattr(t.Name); err != nil {
			return nil, err
		}
		if len(data) > xattrMax {
			return nil, linux.E2BIG
		}
	}
	if err := c.reserveXattr(int64(len(data))); err != nil {
		return nil, err
	}
	e := &fidEntry{kind: fidXattrRead, xdata: data, xreserved: int64(len(data)), uid: ref.uid}
	if err := c.insertFid(t.NewFID, e); err != nil {
		c.unreserveXattr(e.xreserved)
		return nil, err
	}
	r.r.xattrwalk.Size = uint64(len(data))
	return r.encode(&r.r.xattrwalk), nil
}

// Txattrcreate turns the fid into an xattr-write fid: Twrites fill the
// value, Tclunk stores it. The size is bounded by Linux's XATTR_SIZE_MAX and
// by the connection's budget.
func (c *conn) txattrcreate(r *request) ([]byte, error) {
	t := &r.t.xattrcreate
	if t.Name == "" || strings.IndexByte(t.Name, 0) >= 0 || t.Flags&^(xattrCreate|xattrReplace) != 0 {
		return nil, linux.EINVAL
	}
	if t.Size > xattrMax {
		return nil, linux.E2BIG
	}
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	size := int64(t.Size)
	if err := c.reserveXattr(size); err != nil {
		return nil, err
	}
	e := ref.e
	e.mu.Lock()
	switch {
	case e.clunked || e.kind != fidFile || e.h != ref.h:
		err = linux.EBADF
	case e.opening:
		err = linux.EBUSY
	default:
		e.kind = fidXattrWrite
		e.xname, e.xsize, e.xflags = t.Name, t.Size, t.Flags
		e.xdata = make([]byte, 0, size)
		e.xreserved += size
	}
	e.mu.Unlock()
	if err != nil {
		c.unreserveXattr(size)
		return nil, err
	}
	return r.emptyReply(proto.TypeRxattrcreate), nil
}

// Tlock needs an open fid (p9's server does not check).
func (c *conn) tlock(r *request) ([]byte, error) {
	t := &r.t.lock
	if t.LockType > p9.Unlock || t.Flags&^lockFlagsAll != 0 {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if !ref.opened {
		return nil, linux.EBADF
	}
	st, err := ref.file().Lock(int(t.ProcID), t.LockType, t.Flags, t.Start, t.Length, t.ClientID)
	if err != nil {
		return nil, err
	}
	r.r.lock.Status = st
	return r.encode(&r.r.lock), nil
}

// Tgetlock uses the File's optional GetLock (p9's server does not register
// Tgetlock at all).
func (c *conn) tgetlock(r *request) ([]byte, error) {
	t := &r.t.getlock
	if t.LockType > p9.Unlock {
		return nil, linux.EINVAL
	}
	ref, err := c.acquireFile(t.FID)
	if err != nil {
		return nil, err
	}
	defer ref.release()
	if !ref.opened {
		return nil, linux.EBADF
	}
	gl, ok := ref.file().(getLocker)
	if !ok {
		return nil, linux.EOPNOTSUPP
	}
	typ, start, length, pid, client, err := gl.GetLock(t.LockType, t.Start, t.Length, int(t.ProcID), t.ClientID)
	if err != nil {
		return nil, err
	}
	if len(client) > proto.MaxStringLen || proto.HeaderSize+1+8+8+4+2+len(client) > int(c.msize) {
		return nil, linux.ENAMETOOLONG
	}
	r.r.getlock = proto.Rgetlock{LockType: typ, Start: start, Length: length, ProcID: int32(pid), ClientID: client}
	return r.encode(&r.r.getlock), nil
}
