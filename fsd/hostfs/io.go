package hostfs

import (
	"io"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// 9P2000.L open flags (Linux's P9_DOTL_*) that hostfs honours, translated
// explicitly to the host's values. Every other bit a guest sends is
// dropped: O_APPEND would make pwrite ignore the guest's offset, O_DIRECT
// and O_NOATIME can fail or need privileges, O_CREAT/O_EXCL belong to
// Create, O_NONBLOCK/O_NOCTTY/O_NOFOLLOW/O_DIRECTORY are hostfs's to set.
const (
	dotlAccMode = 0o3
	dotlTrunc   = 0o1000
	dotlDsync   = 0o10000
	dotlSync    = 0o4000000
)

// hostOpenFlags translates the guest's open flags. It fails with EINVAL
// for the access mode 3, which Linux reserves.
func hostOpenFlags(flags p9.OpenFlags) (int, error) {
	acc := int(flags & dotlAccMode)
	var h int
	switch acc {
	case 0:
		h = unix.O_RDONLY
	case 1:
		h = unix.O_WRONLY
	case 2:
		h = unix.O_RDWR
	default:
		return 0, linux.EINVAL
	}
	if flags&dotlTrunc != 0 {
		h |= unix.O_TRUNC
	}
	if flags&dotlDsync != 0 {
		h |= unix.O_DSYNC
	}
	if flags&dotlSync != 0 {
		h |= unix.O_SYNC
	}
	return h | unix.O_LARGEFILE, nil
}

// writes reports whether host open flags modify the file.
func writes(h int) bool {
	return h&unix.O_ACCMODE != unix.O_RDONLY || h&unix.O_TRUNC != 0
}

// Open implements p9.File.Open. Only regular files and directories are
// opened: a symlink answers ELOOP (as open with O_NOFOLLOW does) and a
// device node, socket or FIFO answers ENXIO without any open(2), so it can
// never hang or reach a device. The pinned inode is reopened through
// /proc/self/fd with the masked flags.
func (f *file) Open(flags p9.OpenFlags) (p9.QID, uint32, error) {
	if err := f.enter(); err != nil {
		return p9.QID{}, 0, err
	}
	defer f.exit()
	h, err := hostOpenFlags(flags)
	if err != nil {
		return p9.QID{}, 0, err
	}
	switch {
	case f.n.isRegular():
	case f.n.isDir():
		if h&unix.O_ACCMODE != unix.O_RDONLY {
			return p9.QID{}, 0, linux.EISDIR
		}
		h = unix.O_RDONLY | unix.O_DIRECTORY
	case f.n.isSymlink():
		return p9.QID{}, 0, linux.ELOOP
	default:
		return p9.QID{}, 0, linux.ENXIO
	}
	if f.fs.readOnly && writes(h) {
		return p9.QID{}, 0, linux.EROFS
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open.Load() != nil {
		return p9.QID{}, 0, linux.EINVAL
	}
	fd, err := reopen(f.n.fd, h)
	if err != nil {
		return p9.QID{}, 0, hostErrno(err)
	}
	// ownOpen is published by the Store below and never written again.
	f.ownOpen = openFile{fd: fd}
	if f.n.isDir() {
		f.ownOpen.dir = &dirReader{}
	}
	f.open.Store(&f.ownOpen)
	return f.n.qid, 0, nil
}

// openFD returns the fd of an open file, or EBADF.
func (f *file) openFD() (*openFile, error) {
	of := f.open.Load()
	if of == nil {
		return nil, linux.EBADF
	}
	return of, nil
}

// readFD is the open file a read at offset goes to: EBADF when the file
// is not open, EINVAL for a negative offset.
func (f *file) readFD(offset int64) (*openFile, error) {
	of, err := f.openFD()
	if err == nil && offset < 0 {
		return nil, linux.EINVAL
	}
	return of, err
}

// ReadAt implements p9.File.ReadAt: one pread on the open fd. It returns
// io.EOF with no data at or past the end of the file.
func (f *file) ReadAt(p []byte, offset int64) (int, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.exit()
	of, err := f.readFD(offset)
	if err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Pread(of.fd, p, offset)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, hostErrno(err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// SpliceRead moves up to count bytes at offset from the open file into the
// pipe whose write end is pipeFD, with splice(2): the page cache's pages
// are not copied (server.FileSplicer; the server then splices them into
// the connection). It returns the bytes moved, 0 at the end of the file.
// With nothing moved it returns the host's error (EINVAL where the file
// system has no splice support; the server then reads with ReadAt); a full
// pipe or an error after some bytes ends the call with those.
func (f *file) SpliceRead(pipeFD int, offset int64, count int) (int, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.exit()
	of, err := f.readFD(offset)
	if err != nil {
		return 0, err
	}
	n := 0
	for n < count {
		m, err := unix.Splice(of.fd, &offset, pipeFD, nil, count-n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil && n > 0:
			return n, nil
		case err != nil:
			return 0, hostErrno(err)
		case m == 0:
			return n, nil
		}
		n += int(m)
	}
	return n, nil
}

// WriteAt implements p9.File.WriteAt: pwrite on the open fd until all of
// p is written or the host refuses more.
func (f *file) WriteAt(p []byte, offset int64) (int, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.exit()
	of, err := f.openFD()
	if err != nil {
		return 0, err
	}
	if offset < 0 || offset > maxInt64-int64(len(p)) {
		return 0, linux.EINVAL
	}
	done := 0
	for done < len(p) {
		n, err := unix.Pwrite(of.fd, p[done:], offset+int64(done))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			if done > 0 {
				return done, nil
			}
			return 0, hostErrno(err)
		case n == 0:
			if done > 0 {
				return done, nil
			}
			return 0, linux.EIO
		}
		done += n
	}
	return done, nil
}

// FSync implements p9.File.FSync: fsync of the open fd (p9's FSync has no
// datasync flag, so data and metadata are both synced).
func (f *file) FSync() error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	of, err := f.openFD()
	if err != nil {
		return err
	}
	for {
		err := unix.Fsync(of.fd)
		if err != unix.EINTR {
			return hostErrno(err)
		}
	}
}
