package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// testFS is a test-only attach point over a temporary directory: each File
// holds an O_PATH fd on its node (so attribute calls keep working on a file
// unlinked under it, as with hostfs) and a path for namespace operations.
// Extended attributes live in memory, keyed by inode. It counts live Files
// and double closes, records calls, and can be made to block or fail.
type testFS struct {
	root string

	live        atomic.Int64 // Files not yet closed
	doubleClose atomic.Int64
	// partialWalk makes Walk report the QIDs it walked on a failure (the
	// default reports none, exercising the server's step-by-step walk).
	partialWalk bool
	// gate, when set, is a FIFO: a RenameAt of the name "slow" blocks
	// reading it until a test writes to it, and while such a rename is in
	// the File every GetAttr fails with EBUSY. Both work the same whether
	// the File runs in this process or in a child.
	gate     string
	renaming atomic.Int32

	mu     sync.Mutex
	calls  []string
	opened []p9.OpenFlags // flags of every File.Open, in order
	xattrs map[uint64]map[string][]byte
	// hooks run at the start of the named method; a non-nil error is
	// returned from it.
	hooks map[string]func(f *testFile) error
}

func newTestFS(t testing.TB) *testFS { return newTestFSAt(t.TempDir()) }

func newTestFSAt(root string) *testFS {
	return &testFS{root: root, xattrs: map[uint64]map[string][]byte{}, hooks: map[string]func(*testFile) error{}}
}

// Attach implements Router.Attach: "" and "/" are the root, anything else
// ENOENT.
func (fs *testFS) Attach(aname string) (p9.File, error) {
	if aname != "" && aname != "/" {
		return nil, linux.ENOENT
	}
	return fs.open(fs.root)
}

// attacher adapts testFS to p9.Attacher for p9.NewServer.
type attacher struct{ fs *testFS }

// Attach implements p9.Attacher.Attach.
func (a attacher) Attach() (p9.File, error) { return a.fs.open(a.fs.root) }

func (fs *testFS) path(rel string) string { return filepath.Join(fs.root, rel) }

func (fs *testFS) setHook(method string, h func(*testFile) error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.hooks[method] = h
}

func (fs *testFS) hook(method string, f *testFile) error {
	fs.mu.Lock()
	fs.calls = append(fs.calls, method)
	h := fs.hooks[method]
	fs.mu.Unlock()
	if h != nil {
		return h(f)
	}
	return nil
}

func (fs *testFS) called(method string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, c := range fs.calls {
		if c == method {
			n++
		}
	}
	return n
}

func (fs *testFS) open(path string) (*testFile, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fs.live.Add(1)
	return &testFile{fs: fs, path: path, pathFD: fd, openFD: -1}, nil
}

// testFile is one node of a testFS.
type testFile struct {
	p9.DefaultWalkGetAttr
	fs     *testFS
	mu     sync.Mutex
	path   string
	pathFD int
	openFD int
	closed bool
}

var (
	_ p9.File   = (*testFile)(nil)
	_ remover   = (*testFile)(nil)
	_ getLocker = (*testFile)(nil)
)

func (f *testFile) procPath() string { return fmt.Sprintf("/proc/self/fd/%d", f.pathFD) }

func (f *testFile) stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(f.pathFD, &st)
	return st, err
}

func qidOf(st *unix.Stat_t) p9.QID {
	return p9.QID{Type: p9.FileMode(st.Mode).QIDType(), Path: st.Ino}
}

func (f *testFile) child(name string) string { return filepath.Join(f.path, name) }

// Walk implements p9.File.Walk.
func (f *testFile) Walk(names []string) ([]p9.QID, p9.File, error) {
	if err := f.fs.hook("Walk", f); err != nil {
		return nil, nil, err
	}
	if len(names) == 0 {
		nf, err := f.fs.open(f.path)
		if err != nil {
			return nil, nil, err
		}
		return nil, nf, nil
	}
	var qids []p9.QID
	path := f.path
	for _, n := range names {
		path = filepath.Join(path, n)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			if f.fs.partialWalk {
				return qids, nil, err
			}
			return nil, nil, err
		}
		qids = append(qids, qidOf(&st))
	}
	nf, err := f.fs.open(path)
	if err != nil {
		return nil, nil, err
	}
	return qids, nf, nil
}

// StatFS implements p9.File.StatFS.
func (f *testFile) StatFS() (p9.FSStat, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.pathFD, &s); err != nil {
		return p9.FSStat{}, err
	}
	return p9.FSStat{Type: uint32(s.Type), BlockSize: uint32(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree, BlocksAvailable: s.Bavail, Files: s.Files, FilesFree: s.Ffree, NameLength: uint32(s.Namelen)}, nil
}

// GetAttr implements p9.File.GetAttr.
func (f *testFile) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	if err := f.fs.hook("GetAttr", f); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	if f.fs.renaming.Load() > 0 {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, linux.EBUSY
	}
	st, err := f.stat()
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	attr := p9.Attr{
		Mode: p9.FileMode(st.Mode), UID: p9.UID(st.Uid), GID: p9.GID(st.Gid), NLink: p9.NLink(st.Nlink),
		RDev: p9.Dev(st.Rdev), Size: uint64(st.Size), BlockSize: uint64(st.Blksize), Blocks: uint64(st.Blocks),
		ATimeSeconds: uint64(st.Atim.Sec), ATimeNanoSeconds: uint64(st.Atim.Nsec),
		MTimeSeconds: uint64(st.Mtim.Sec), MTimeNanoSeconds: uint64(st.Mtim.Nsec),
		CTimeSeconds: uint64(st.Ctim.Sec), CTimeNanoSeconds: uint64(st.Ctim.Nsec),
	}
	valid := p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true, ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true}
	return qidOf(&st), valid, attr, nil
}

// SetAttr implements p9.File.SetAttr through the node's fd, so it works on
// an unlinked file.
func (f *testFile) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if err := f.fs.hook("SetAttr", f); err != nil {
		return err
	}
	p := f.procPath()
	if valid.Permissions {
		if err := unix.Chmod(p, uint32(attr.Permissions&07777)); err != nil {
			return err
		}
	}
	if valid.UID || valid.GID {
		uid, gid := -1, -1
		if valid.UID {
			uid = int(attr.UID)
		}
		if valid.GID {
			gid = int(attr.GID)
		}
		if err := unix.Fchownat(f.pathFD, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	if valid.Size {
		if err := unix.Truncate(p, int64(attr.Size)); err != nil {
			return err
		}
	}
	return nil
}

// Close implements p9.File.Close and counts double closes.
func (f *testFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		f.fs.doubleClose.Add(1)
		return linux.EBADF
	}
	f.closed = true
	f.fs.live.Add(-1)
	unix.Close(f.pathFD)
	if f.openFD >= 0 {
		unix.Close(f.openFD)
	}
	// The hook runs after the release, so a panicking hook leaks nothing.
	return f.fs.hook("Close", f)
}

func (f *testFile) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Open implements p9.File.Open by reopening the node's fd.
func (f *testFile) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	if err := f.fs.hook("Open", f); err != nil {
		return p9.QID{}, 0, err
	}
	f.fs.mu.Lock()
	f.fs.opened = append(f.fs.opened, mode)
	f.fs.mu.Unlock()
	st, err := f.stat()
	if err != nil {
		return p9.QID{}, 0, err
	}
	// The flags go to the host as received, as a naive attach point would
	// pass them: whatever the server lets through reaches open(2).
	fd, err := unix.Open(f.procPath(), int(mode)|unix.O_CLOEXEC, 0)
	if err != nil {
		return p9.QID{}, 0, err
	}
	f.mu.Lock()
	f.openFD = fd
	f.mu.Unlock()
	return qidOf(&st), 0, nil
}

func (f *testFile) fd() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.openFD
}

// ReadAt implements p9.File.ReadAt.
func (f *testFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.hook("ReadAt", f); err != nil {
		return 0, err
	}
	n, err := unix.Pread(f.fd(), p, off)
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// SpliceRead implements FileSplicer, as hostfs does; a server uses it only
// when it has a pipe pool.
func (f *testFile) SpliceRead(pipeFD int, off int64, count int) (int, error) {
	if err := f.fs.hook("SpliceRead", f); err != nil {
		return 0, err
	}
	n := 0
	for n < count {
		m, err := unix.Splice(f.fd(), &off, pipeFD, nil, count-n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil && n > 0:
			return n, nil
		case err != nil:
			return 0, err
		case m == 0:
			return n, nil
		}
		n += int(m)
	}
	return n, nil
}

// WriteAt implements p9.File.WriteAt.
func (f *testFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.hook("WriteAt", f); err != nil {
		return 0, err
	}
	return unix.Pwrite(f.fd(), p, off)
}

func (f *testFile) ino() uint64 {
	st, _ := f.stat()
	return st.Ino
}

// SetXattr implements p9.File.SetXattr in memory.
func (f *testFile) SetXattr(attr string, data []byte, flags p9.XattrFlags) error {
	if err := f.fs.hook("SetXattr", f); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	m := f.fs.xattrs[f.ino()]
	if m == nil {
		m = map[string][]byte{}
		f.fs.xattrs[f.ino()] = m
	}
	_, exists := m[attr]
	if flags&p9.XattrCreate != 0 && exists {
		return linux.EEXIST
	}
	if flags&p9.XattrReplace != 0 && !exists {
		return linux.ENODATA
	}
	m[attr] = append([]byte{}, data...)
	return nil
}

// GetXattr implements p9.File.GetXattr in memory.
func (f *testFile) GetXattr(attr string) ([]byte, error) {
	if err := f.fs.hook("GetXattr", f); err != nil {
		return nil, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	v, ok := f.fs.xattrs[f.ino()][attr]
	if !ok {
		return nil, linux.ENODATA
	}
	return append([]byte{}, v...), nil
}

// ListXattrs implements p9.File.ListXattrs in memory.
func (f *testFile) ListXattrs() ([]string, error) {
	if err := f.fs.hook("ListXattrs", f); err != nil {
		return nil, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	var names []string
	for n := range f.fs.xattrs[f.ino()] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// RemoveXattr implements p9.File.RemoveXattr in memory.
func (f *testFile) RemoveXattr(attr string) error {
	if err := f.fs.hook("RemoveXattr", f); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	m := f.fs.xattrs[f.ino()]
	if _, ok := m[attr]; !ok {
		return linux.ENODATA
	}
	delete(m, attr)
	return nil
}

// FSync implements p9.File.FSync.
func (f *testFile) FSync() error {
	if err := f.fs.hook("FSync", f); err != nil {
		return err
	}
	return unix.Fsync(f.fd())
}

// Lock implements p9.File.Lock: it records the call and grants the lock.
func (f *testFile) Lock(pid int, locktype p9.LockType, flags p9.LockFlags, start, length uint64, client string) (p9.LockStatus, error) {
	if err := f.fs.hook("Lock", f); err != nil {
		return p9.LockStatusError, err
	}
	return p9.LockStatusOK, nil
}

// GetLock implements the server's optional Tgetlock interface: no lock
// conflicts.
func (f *testFile) GetLock(t p9.LockType, start, length uint64, pid int, client string) (p9.LockType, uint64, uint64, int, string, error) {
	if err := f.fs.hook("GetLock", f); err != nil {
		return 0, 0, 0, 0, "", err
	}
	return p9.Unlock, start, length, pid, client, nil
}

// Create implements p9.File.Create.
func (f *testFile) Create(name string, flags p9.OpenFlags, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.fs.hook("Create", f); err != nil {
		return nil, p9.QID{}, 0, err
	}
	path := f.child(name)
	fd, err := unix.Open(path, int(flags)&unix.O_ACCMODE|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, uint32(perm&07777))
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	// open(2) drops setuid/setgid for a non-privileged creator; chmod sets
	// exactly the bits the client sent.
	if err := unix.Fchmod(fd, uint32(perm&07777)); err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	nf, err := f.fs.open(path)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	nf.openFD = fd
	st, _ := nf.stat()
	return nf, qidOf(&st), 0, nil
}

// Mkdir implements p9.File.Mkdir.
func (f *testFile) Mkdir(name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.fs.hook("Mkdir", f); err != nil {
		return p9.QID{}, err
	}
	path := f.child(name)
	if err := unix.Mkdir(path, uint32(perm&07777)); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Chmod(path, uint32(perm&07777)); err != nil {
		return p9.QID{}, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return p9.QID{}, err
	}
	return qidOf(&st), nil
}

// Symlink implements p9.File.Symlink.
func (f *testFile) Symlink(oldName, newName string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.fs.hook("Symlink", f); err != nil {
		return p9.QID{}, err
	}
	path := f.child(newName)
	if err := unix.Symlink(oldName, path); err != nil {
		return p9.QID{}, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return p9.QID{}, err
	}
	return qidOf(&st), nil
}

// Link implements p9.File.Link.
func (f *testFile) Link(target p9.File, newName string) error {
	if err := f.fs.hook("Link", f); err != nil {
		return err
	}
	tf, ok := target.(*testFile)
	if !ok {
		return linux.EXDEV
	}
	return unix.Linkat(tf.pathFD, "", unix.AT_FDCWD, f.child(newName), unix.AT_EMPTY_PATH)
}

// Mknod implements p9.File.Mknod: FIFOs only, device nodes are EPERM.
func (f *testFile) Mknod(name string, mode p9.FileMode, major, minor uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.fs.hook("Mknod", f); err != nil {
		return p9.QID{}, err
	}
	if !mode.IsNamedPipe() {
		return p9.QID{}, unix.EPERM
	}
	path := f.child(name)
	if err := unix.Mknod(path, uint32(mode), 0); err != nil {
		return p9.QID{}, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return p9.QID{}, err
	}
	return qidOf(&st), nil
}

// Rename implements p9.File.Rename (called by fsd's server for Trename).
func (f *testFile) Rename(newDir p9.File, newName string) error {
	if err := f.fs.hook("Rename", f); err != nil {
		return err
	}
	d, ok := newDir.(*testFile)
	if !ok {
		return linux.EXDEV
	}
	to := d.child(newName)
	if err := unix.Rename(f.path, to); err != nil {
		return err
	}
	f.mu.Lock()
	f.path = to
	f.mu.Unlock()
	return nil
}

// RenameAt implements p9.File.RenameAt.
func (f *testFile) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.fs.hook("RenameAt", f); err != nil {
		return err
	}
	d, ok := newDir.(*testFile)
	if !ok {
		return linux.EXDEV
	}
	if oldName == "slow" && f.fs.gate != "" {
		f.fs.renaming.Add(1)
		defer f.fs.renaming.Add(-1)
		if _, err := os.ReadFile(f.fs.gate); err != nil {
			return err
		}
	}
	return unix.Rename(f.child(oldName), d.child(newName))
}

// UnlinkAt implements p9.File.UnlinkAt.
func (f *testFile) UnlinkAt(name string, flags uint32) error {
	if err := f.fs.hook("UnlinkAt", f); err != nil {
		return err
	}
	return unix.Unlinkat(unix.AT_FDCWD, f.child(name), int(flags))
}

// Readdir implements p9.File.Readdir: offsets are positions in the sorted
// listing.
func (f *testFile) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	if err := f.fs.hook("Readdir", f); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(f.path)
	if err != nil {
		return nil, err
	}
	var out p9.Dirents
	for i := int(offset); i < len(ents); i++ {
		var st unix.Stat_t
		if err := unix.Lstat(f.child(ents[i].Name()), &st); err != nil {
			continue
		}
		q := qidOf(&st)
		out = append(out, p9.Dirent{QID: q, Offset: uint64(i + 1), Type: q.Type, Name: ents[i].Name()})
	}
	return out, nil
}

// Readlink implements p9.File.Readlink.
func (f *testFile) Readlink() (string, error) {
	if err := f.fs.hook("Readlink", f); err != nil {
		return "", err
	}
	return os.Readlink(f.path)
}

// Renamed implements p9.File.Renamed (p9's server calls it).
func (f *testFile) Renamed(newDir p9.File, newName string) {
	if d, ok := newDir.(*testFile); ok {
		f.mu.Lock()
		f.path = d.child(newName)
		f.mu.Unlock()
	}
}

// Remove implements the server's optional Tremove interface.
func (f *testFile) Remove() error {
	if err := f.fs.hook("Remove", f); err != nil {
		return err
	}
	st, err := f.stat()
	if err != nil {
		return err
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(unix.AT_FDCWD, f.path, flags)
}
