package server

import (
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// handle is a reference-counted File: the fid table holds one reference and
// every request using the File holds one while it runs. The File is closed
// exactly once, when the last reference goes.
type handle struct {
	file p9.File
	refs atomic.Int32
	log  *logrus.Entry
}

func newHandle(f p9.File, log *logrus.Entry) *handle {
	h := &handle{file: f, log: log}
	h.refs.Store(1)
	return h
}

// fileFid is a fid entry and the handle of its File in one allocation: a
// walk or an attach makes both at once. The handle may outlive the entry
// (a request still holds it after Tclunk); the allocation lives as long as
// either is referenced.
type fileFid struct {
	e fidEntry
	h handle
}

// newFileFid returns a fid entry for f holding the only reference to it.
func newFileFid(f p9.File, log *logrus.Entry, isDir bool, uid p9.UID) *fidEntry {
	ff := new(fileFid)
	ff.h.file, ff.h.log = f, log
	ff.h.refs.Store(1)
	ff.e.h, ff.e.isDir, ff.e.uid = &ff.h, isDir, uid
	return &ff.e
}

func (h *handle) incRef() { h.refs.Add(1) }

func (h *handle) decRef() {
	switch n := h.refs.Add(-1); {
	case n == 0:
		closeFile(h.file, h.log)
	case n < 0:
		h.log.Errorf("handle reference count went negative (%d)", n)
	}
}

// closeFile closes f, logging an error and surviving a panic: Close runs on
// paths (connection teardown) where no request would catch it.
func closeFile(f p9.File, log *logrus.Entry) {
	defer func() {
		if p := recover(); p != nil {
			log.Errorf("panic in File.Close: %v\n%s", p, debug.Stack())
		}
	}()
	if err := f.Close(); err != nil {
		log.WithError(err).Debug("File.Close failed")
	}
}

// fidKind says what a fid names.
type fidKind uint8

const (
	// fidFile names a File.
	fidFile fidKind = iota
	// fidXattrRead holds an attribute value (or name list) read by
	// Txattrwalk; it has no File.
	fidXattrRead
	// fidXattrWrite collects a value for Txattrcreate; Tclunk stores it
	// through the File.
	fidXattrWrite
)

// fidEntry is one fid. mu guards every field; the File itself is used
// without holding mu.
type fidEntry struct {
	mu      sync.Mutex
	h       *handle // nil for fidXattrRead, and once clunked
	kind    fidKind
	clunked bool
	// opening is set while Open or Create runs on the fid, so that neither
	// runs twice and nothing replaces the File meanwhile.
	opening bool
	opened  bool
	mode    p9.OpenFlags // access mode (p9.OpenFlagsModeMask bits) once opened
	isDir   bool
	uid     p9.UID // the attach uid, passed to Create, Mkdir, Symlink, Mknod

	xdata     []byte // fidXattrRead: the value; fidXattrWrite: what was written
	xname     string // fidXattrWrite: the attribute
	xsize     uint64 // fidXattrWrite: the announced size
	xflags    uint32 // fidXattrWrite: setxattr flags
	xreserved int64  // bytes charged to the connection's xattr budget
}

// fidRef is a request's view of a fid: a snapshot of its state and a
// reference on its File (h, nil for xattr-read fids).
type fidRef struct {
	e      *fidEntry
	h      *handle
	kind   fidKind
	opened bool
	mode   p9.OpenFlags
	isDir  bool
	uid    p9.UID
}

func (r *fidRef) file() p9.File { return r.h.file }

func (r *fidRef) release() {
	if r.h != nil {
		r.h.decRef()
		r.h = nil
	}
}

// acquire looks id up and takes a reference on its File. Unknown or clunked
// fids are EBADF.
func (c *conn) acquire(id proto.FID) (fidRef, error) {
	c.fmu.Lock()
	e := c.fids[id]
	c.fmu.Unlock()
	if e == nil {
		return fidRef{}, linux.EBADF
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clunked {
		return fidRef{}, linux.EBADF
	}
	r := fidRef{e: e, h: e.h, kind: e.kind, opened: e.opened, mode: e.mode, isDir: e.isDir, uid: e.uid}
	if r.h != nil {
		r.h.incRef()
	}
	return r, nil
}

// acquireFile is acquire for requests that need a File: xattr fids are
// EBADF.
func (c *conn) acquireFile(id proto.FID) (fidRef, error) {
	r, err := c.acquire(id)
	if err != nil {
		return r, err
	}
	if r.kind != fidFile || r.h == nil {
		r.release()
		return fidRef{}, linux.EBADF
	}
	return r, nil
}

// acquireDir is acquireFile for requests on a directory: others are
// ENOTDIR.
func (c *conn) acquireDir(id proto.FID) (fidRef, error) {
	r, err := c.acquireFile(id)
	if err != nil {
		return r, err
	}
	if !r.isDir {
		r.release()
		return fidRef{}, linux.ENOTDIR
	}
	return r, nil
}

// checkNewFid reports whether id can become a new fid: EBADF if it is in
// use, EMFILE at the per-connection limit. insertFid checks again.
func (c *conn) checkNewFid(id proto.FID) error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.newFidErrLocked(id)
}

func (c *conn) newFidErrLocked(id proto.FID) error {
	if _, ok := c.fids[id]; ok {
		return linux.EBADF
	}
	if len(c.fids) >= c.srv.maxFids {
		return linux.EMFILE
	}
	return nil
}

// insertFid adds e as id. On error the caller still owns e's handle.
func (c *conn) insertFid(id proto.FID, e *fidEntry) error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if err := c.newFidErrLocked(id); err != nil {
		return err
	}
	c.fids[id] = e
	c.srv.fids.Add(1)
	return nil
}

// removeFid takes id out of the table and marks it clunked. It returns the
// entry and the table's reference on its File (nil for xattr-read fids), which
// the caller must release, or nil when id is unknown.
func (c *conn) removeFid(id proto.FID) (*fidEntry, *handle) {
	c.fmu.Lock()
	e := c.fids[id]
	if e != nil {
		delete(c.fids, id)
		c.srv.fids.Add(-1)
	}
	c.fmu.Unlock()
	if e == nil {
		return nil, nil
	}
	e.mu.Lock()
	e.clunked = true
	h := e.h
	e.h = nil
	reserved := e.xreserved
	e.xreserved = 0
	e.mu.Unlock()
	c.unreserveXattr(reserved)
	return e, h
}

// clunkAll forgets every fid, closing their Files once no request uses them.
func (c *conn) clunkAll() {
	c.fmu.Lock()
	ids := make([]proto.FID, 0, len(c.fids))
	for id := range c.fids {
		ids = append(ids, id)
	}
	c.fmu.Unlock()
	for _, id := range ids {
		if _, h := c.removeFid(id); h != nil {
			h.decRef()
		}
	}
}

// reserveXattr charges n bytes to the connection's xattr budget.
func (c *conn) reserveXattr(n int64) error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.xattrBytes+n > xattrBudget {
		return linux.ENOSPC
	}
	c.xattrBytes += n
	return nil
}

func (c *conn) unreserveXattr(n int64) {
	if n == 0 {
		return
	}
	c.fmu.Lock()
	c.xattrBytes -= n
	c.fmu.Unlock()
}
