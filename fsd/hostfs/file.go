package hostfs

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// file is the p9.File for one fid: a pinned node, plus what Remove and
// symlink times need to name it (its parent's node and its name), plus
// the open state once Open or Create has run (ownOpen, inside the File).
type file struct {
	fs *FS
	n  *node // a pinnedFile's own node, or a shared one (a clone's, the root's)

	// mu guards parent and name (Renamed and Rename change them) and
	// serializes the transition to open.
	mu     sync.Mutex
	parent *node // nil for the export root
	name   string

	// open is nil until Open or Create succeeds, then &ownOpen; it never
	// changes after.
	open atomic.Pointer[openFile]

	// state counts the calls in flight in its low bits; closedBit marks
	// Close. The fds are released on the transition to exactly
	// closedBit (closed, nothing in flight), which happens once.
	state atomic.Int64

	// ownOpen is what open points to once set; written only before that
	// Store (under mu, or before the File is published), read only
	// through open.
	ownOpen openFile
}

// pinnedFile is a File that pinned its inode itself (a walk's last
// component, a create): the File, its node and the QID a one-name walk
// returns, in one allocation. Only the embedded file is handed out; a
// clone is a plain file sharing own, so it costs less.
type pinnedFile struct {
	file
	own node
	// qids holds the QID a one-name Walk returns: the caller's slice
	// aliases it, and it is never written again.
	qids [1]p9.QID
}

const closedBit = 1 << 62

// openFile is the fd Open or Create produced: a reopened fd of its own,
// or after Create the node's fd itself (fd == n.fd, which two open fds
// never share), which is then closed with the node, not with the file.
type openFile struct {
	fd int
	// dir is the readdir state of an open directory, nil otherwise.
	dir *dirReader
}

// shared reports whether of.fd is the node's fd (a created file).
func (of *openFile) shared(n *node) bool { return of.fd == n.fd }

// Compile-time checks: p9.File, and the optional methods fsd's server
// looks for (Tremove, Tgetlock).
var (
	_ p9.File                     = (*file)(nil)
	_ interface{ Remove() error } = (*file)(nil)
	_ interface {
		GetLock(t p9.LockType, start, length uint64, pid int, client string) (p9.LockType, uint64, uint64, int, string, error)
	} = (*file)(nil)
)

// newFile returns a File for a shared node n (the export root's, or a
// clone's source's), which must already hold a reference for it; parent
// (possibly nil) must also hold one.
func (fs *FS) newFile(n *node, parent *node, name string) *file {
	return &file{fs: fs, n: n, parent: parent, name: name}
}

// newPinnedFile returns a File pinning fd (which it now owns), its node
// allocated with it; parent must hold a reference for it.
func (fs *FS) newPinnedFile(fd int, st *unix.Stat_t, qid p9.QID, parent *node, name string) *pinnedFile {
	pf := &pinnedFile{file: file{fs: fs, parent: parent, name: name}}
	pf.own.init(fd, st, qid)
	pf.n = &pf.own
	return pf
}

// enter registers a call in flight; it fails with EBADF once the file is
// closed. Every method that touches an fd runs between enter and exit.
func (f *file) enter() error {
	for {
		s := f.state.Load()
		if s&closedBit != 0 {
			return linux.EBADF
		}
		if f.state.CompareAndSwap(s, s+1) {
			return nil
		}
	}
}

// exit ends a call; the last call out of a closed file releases it.
func (f *file) exit() {
	if f.state.Add(-1) == closedBit {
		f.release()
	}
}

// Close implements p9.File.Close. It never waits: calls in flight finish
// with the fds intact, later calls fail with EBADF, and the fds are
// closed when the last call returns. A second Close answers EBADF.
func (f *file) Close() error {
	old := f.state.Or(closedBit)
	if old&closedBit != 0 {
		return linux.EBADF
	}
	if old == 0 {
		f.release()
	}
	return nil
}

// release closes what the file owns, exactly once.
func (f *file) release() {
	if of := f.open.Load(); of != nil {
		if of.dir != nil {
			of.dir.drop()
		}
		if !of.shared(f.n) {
			unix.Close(of.fd)
		}
	}
	f.n.decRef()
	f.mu.Lock()
	parent := f.parent
	f.parent = nil
	f.mu.Unlock()
	if parent != nil {
		parent.decRef()
	}
}

// parentAndName returns the parent node (with a reference the caller must
// drop) and the name, or EBUSY for the export root.
func (f *file) parentAndName() (*node, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parent == nil {
		return nil, "", linux.EBUSY
	}
	f.parent.incRef()
	return f.parent, f.name, nil
}

// sameFS returns other as a file of the same export, or EXDEV.
func (f *file) sameFS(other p9.File) (*file, error) {
	o, ok := other.(*file)
	if !ok || o.fs != f.fs {
		return nil, linux.EXDEV
	}
	return o, nil
}

// checkName validates one path component from the guest: never empty,
// ".", "..", or containing '/' or NUL (the server checks too; this is the
// attach point's own guard).
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return linux.EINVAL
	}
	if len(name) > unix.NAME_MAX {
		return linux.ENAMETOOLONG
	}
	return nil
}

// Walk implements p9.File.Walk. An empty walk clones the File (sharing
// its pinned fd); otherwise each component costs one open and one fstat.
// A failure at any component fails the whole walk (no File), and returns
// with the error the QIDs of the components walked before it, so that a
// server can answer a partial Rwalk without walking again. A one-name walk
// allocates nothing but the new File (its QID slice aliases the File's
// own, never written again).
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	if err := f.enter(); err != nil {
		return nil, nil, err
	}
	defer f.exit()
	var st unix.Stat_t
	qids, nf, err := f.walk(names, &st, false)
	if err != nil {
		return qids, nil, err
	}
	return qids, nf, nil
}

// WalkGetAttr implements p9.File.WalkGetAttr with the attributes of the
// fstat the walk already did (partial QIDs on failure, as Walk).
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	if err := f.enter(); err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	defer f.exit()
	var st unix.Stat_t
	qids, nf, err := f.walk(names, &st, true)
	if err != nil {
		return qids, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	valid, attr := attrFromStat(&st)
	return qids, nf, valid, attr, nil
}

// walk does Walk. st receives the stat of the last component; a clone
// stats f itself only when statClone is set (WalkGetAttr).
func (f *file) walk(names []string, st *unix.Stat_t, statClone bool) ([]p9.QID, *file, error) {
	if len(names) == 0 {
		if statClone {
			if err := fstat(f.n.fd, st); err != nil {
				return nil, nil, hostErrno(err)
			}
		}
		f.mu.Lock()
		parent, name := f.parent, f.name
		if parent != nil {
			parent.incRef()
		}
		f.mu.Unlock()
		f.n.incRef()
		return nil, f.fs.newFile(f.n, parent, name), nil
	}
	for _, name := range names {
		if err := checkName(name); err != nil {
			return nil, nil, err
		}
	}
	if !f.n.isDir() {
		return nil, nil, linux.ENOTDIR
	}
	// The QIDs of a multi-name walk need a slice of their own; a
	// one-name walk answers with the new File's.
	var qids []p9.QID
	if len(names) > 1 {
		qids = make([]p9.QID, 0, len(names))
	}
	parent := f.n
	parent.incRef()
	for i, name := range names {
		fd, qid, err := f.fs.pin(parent, name, st)
		if err != nil {
			parent.decRef()
			if i == 0 {
				qids = nil
			}
			return qids, nil, err
		}
		if i == len(names)-1 {
			pf := f.fs.newPinnedFile(fd, st, qid, parent, name)
			if qids == nil {
				pf.qids[0] = qid
				return pf.qids[:], &pf.file, nil
			}
			return append(qids, qid), &pf.file, nil
		}
		qids = append(qids, qid)
		// The intermediate directory's node is the parent of the next
		// step: the reference it is born with is the one held for that.
		child := newNode(fd, st, qid)
		parent.decRef()
		parent = child
	}
	panic("unreachable")
}

// pin opens name beneath parent (one open, one fstat into st) and returns
// the new fd, which the caller owns, and its QID.
func (fs *FS) pin(parent *node, name string, st *unix.Stat_t) (int, p9.QID, error) {
	fd, err := openComponent(parent.fd, name, fs.noOpenat2)
	if err != nil {
		return -1, p9.QID{}, hostErrno(err)
	}
	if err := fstat(fd, st); err != nil {
		unix.Close(fd)
		return -1, p9.QID{}, hostErrno(err)
	}
	qid, err := fs.qid(st)
	if err != nil {
		unix.Close(fd)
		return -1, p9.QID{}, err
	}
	return fd, qid, nil
}

// GetAttr implements p9.File.GetAttr: one fstat of the pinned fd. Every
// attribute is returned whatever req asks.
func (f *file) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	if err := f.enter(); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	defer f.exit()
	var st unix.Stat_t
	if err := fstat(f.n.fd, &st); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, hostErrno(err)
	}
	valid, attr := attrFromStat(&st)
	return f.n.qid, valid, attr, nil
}

// StatFS implements p9.File.StatFS with fstatfs of the pinned fd.
func (f *file) StatFS() (p9.FSStat, error) {
	if err := f.enter(); err != nil {
		return p9.FSStat{}, err
	}
	defer f.exit()
	var s unix.Statfs_t
	for {
		err := unix.Fstatfs(f.n.fd, &s)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return p9.FSStat{}, hostErrno(err)
		}
	}
	return p9.FSStat{
		Type:            uint32(s.Type),
		BlockSize:       uint32(s.Bsize),
		Blocks:          s.Blocks,
		BlocksFree:      s.Bfree,
		BlocksAvailable: s.Bavail,
		Files:           s.Files,
		FilesFree:       s.Ffree,
		FSID:            uint64(uint32(s.Fsid.Val[0])) | uint64(uint32(s.Fsid.Val[1]))<<32,
		NameLength:      uint32(s.Namelen),
	}, nil
}

// Readlink implements p9.File.Readlink: readlinkat on the pinned symlink
// itself; the target is returned verbatim and never resolved.
func (f *file) Readlink() (string, error) {
	if err := f.enter(); err != nil {
		return "", err
	}
	defer f.exit()
	if !f.n.isSymlink() {
		return "", linux.EINVAL
	}
	var buf [unix.PathMax]byte
	n, err := unix.Readlinkat(f.n.fd, "", buf[:])
	if err != nil {
		return "", hostErrno(err)
	}
	if n >= len(buf) {
		return "", linux.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

// Renamed implements p9.File.Renamed: the File now has newName in newDir,
// which matters to Remove, Rename and symlink times.
func (f *file) Renamed(newDir p9.File, newName string) {
	nd, err := f.sameFS(newDir)
	if err != nil || f.enter() != nil {
		return
	}
	defer f.exit()
	if nd.enter() != nil {
		return
	}
	defer nd.exit()
	nd.n.incRef()
	f.mu.Lock()
	old := f.parent
	f.parent, f.name = nd.n, newName
	f.mu.Unlock()
	if old != nil {
		old.decRef()
	}
}
