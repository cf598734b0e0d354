package hostfs

import (
	"strings"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Extended attributes are limited to the user.* namespace on regular files
// and directories. The other namespaces are the host's, not the guest's:
// security.capability would grant file capabilities to host binaries in
// the export, trusted.* (overlayfs among others) and security.* (LSM
// labels) steer host kernel behaviour, and system.posix_acl_* would grant
// host users access beyond the mode. Linux itself refuses user.* on
// symlinks and special files; hostfs answers EOPNOTSUPP for them, and for
// any other namespace, as a file system without xattr support does.
const (
	xattrUserPrefix = "user."
	xattrNameMax    = 255      // XATTR_NAME_MAX
	xattrSizeMax    = 64 << 10 // XATTR_SIZE_MAX, also the list limit
)

// checkXattr validates a name and that this file may carry xattrs.
func (f *file) checkXattr(name string) error {
	if !f.n.isRegular() && !f.n.isDir() {
		return linux.EOPNOTSUPP
	}
	if name == "" || len(name) > xattrNameMax {
		return linux.ERANGE
	}
	if strings.IndexByte(name, 0) >= 0 {
		return linux.EINVAL
	}
	if !strings.HasPrefix(name, xattrUserPrefix) {
		return linux.EOPNOTSUPP
	}
	return nil
}

// xattrFD is how an xattr call reaches the pinned inode: the open fd if
// there is one (f*xattr), else the *xattrat calls on the /proc/self/fd
// entry of the pinned fd (Linux 6.13+), else an fd reopened O_RDONLY with
// O_NONBLOCK through /proc/self/fd for the duration of the call (the
// inode is a regular file or directory, so this never hangs).
type xattrFD struct {
	fd     int
	at     bool // fd is the pinned fd, reached with the *xattrat calls
	closed bool // fd was reopened for this call and must be closed
}

func (f *file) xattrFD(noAt bool) (xattrFD, error) {
	if of := f.open.Load(); of != nil {
		return xattrFD{fd: of.fd}, nil
	}
	if !noAt && !f.fs.noXattrat && xattratUsable() {
		return xattrFD{fd: f.n.fd, at: true}, nil
	}
	flags := unix.O_RDONLY | unix.O_NONBLOCK
	if f.n.isDir() {
		flags |= unix.O_DIRECTORY
	}
	fd, err := reopen(f.n.fd, flags)
	if err != nil {
		return xattrFD{}, hostErrno(err)
	}
	return xattrFD{fd: fd, closed: true}, nil
}

func (x xattrFD) release() {
	if x.closed {
		unix.Close(x.fd)
	}
}

// withXattr runs op on the best xattrFD; if the *xattrat calls turn out to
// be missing (ENOSYS) it records that and runs op again on the fallback.
func (f *file) withXattr(op func(x xattrFD) error) error {
	at, err := f.runXattr(false, op)
	if err == unix.ENOSYS && at {
		xattratMissing.Store(true)
		_, err = f.runXattr(true, op)
	}
	return err
}

// runXattr runs op on an xattrFD and releases it however op returns (a
// panic included: the server recovers those, and a reopened fd must not
// leak with each). It reports whether op ran on the *xattrat calls.
func (f *file) runXattr(noAt bool, op func(x xattrFD) error) (bool, error) {
	x, err := f.xattrFD(noAt)
	if err != nil {
		return false, err
	}
	defer x.release()
	return x.at, op(x)
}

func (x xattrFD) get(name string, buf []byte) (int, error) {
	if x.at {
		return xattrat(unix.SYS_GETXATTRAT, x.fd, name, buf, 0)
	}
	return unix.Fgetxattr(x.fd, name, buf)
}

func (x xattrFD) set(name string, data []byte, flags int) error {
	if x.at {
		_, err := xattrat(unix.SYS_SETXATTRAT, x.fd, name, data, flags)
		return err
	}
	return unix.Fsetxattr(x.fd, name, data, flags)
}

func (x xattrFD) list(buf []byte) (int, error) {
	if x.at {
		return listxattrat(x.fd, buf)
	}
	return unix.Flistxattr(x.fd, buf)
}

func (x xattrFD) remove(name string) error {
	if x.at {
		return removexattrat(x.fd, name)
	}
	return unix.Fremovexattr(x.fd, name)
}

// xattrReadTries bounds how often readSized sizes a value again because
// it changed between two calls (a guest can race it with Txattrcreate).
const xattrReadTries = 4

// readSized reads a value whose size may change between calls (read is
// getxattr or listxattr): into a small buffer first, then, on ERANGE,
// into a buffer of the size the host reports, a bounded number of times,
// then ERANGE. A read that reports more than its buffer holds (a
// zero-length buffer is a size query) means the same. A size of 0 is the
// empty value, returned without reading again.
func readSized(read func(buf []byte) (int, error), first int) ([]byte, error) {
	buf := make([]byte, first)
	for range xattrReadTries {
		n, err := read(buf)
		switch {
		case err == nil && n <= len(buf):
			return buf[:n], nil
		case err == nil:
			// Changed under us: size it again.
		case err != unix.ERANGE:
			return nil, err
		}
		size, err := read(nil)
		switch {
		case err != nil:
			return nil, err
		case size > xattrSizeMax:
			return nil, unix.E2BIG
		case size == 0:
			return []byte{}, nil
		}
		buf = make([]byte, size)
	}
	return nil, unix.ERANGE
}

// GetXattr implements p9.File.GetXattr.
func (f *file) GetXattr(attr string) ([]byte, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	defer f.exit()
	if err := f.checkXattr(attr); err != nil {
		return nil, err
	}
	var val []byte
	err := f.withXattr(func(x xattrFD) error {
		var err error
		val, err = readSized(func(buf []byte) (int, error) { return x.get(attr, buf) }, 256)
		return err
	})
	if err != nil {
		return nil, hostErrno(err)
	}
	return val, nil
}

// ListXattrs implements p9.File.ListXattrs: the user.* names.
func (f *file) ListXattrs() ([]string, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	defer f.exit()
	if !f.n.isRegular() && !f.n.isDir() {
		return nil, linux.EOPNOTSUPP
	}
	var raw []byte
	err := f.withXattr(func(x xattrFD) error {
		var err error
		raw, err = readSized(x.list, 1024)
		return err
	})
	if err != nil {
		return nil, hostErrno(err)
	}
	var names []string
	for _, name := range strings.Split(string(raw), "\x00") {
		if strings.HasPrefix(name, xattrUserPrefix) {
			names = append(names, name)
		}
	}
	return names, nil
}

// SetXattr implements p9.File.SetXattr. flags may hold XATTR_CREATE and
// XATTR_REPLACE; values are bounded by XATTR_SIZE_MAX.
func (f *file) SetXattr(attr string, data []byte, flags p9.XattrFlags) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if f.fs.readOnly {
		return linux.EROFS
	}
	if err := f.checkXattr(attr); err != nil {
		return err
	}
	if len(data) > xattrSizeMax {
		return linux.E2BIG
	}
	if flags&^(p9.XattrCreate|p9.XattrReplace) != 0 {
		return linux.EINVAL
	}
	return hostErrno(f.withXattr(func(x xattrFD) error { return x.set(attr, data, int(flags)) }))
}

// RemoveXattr implements p9.File.RemoveXattr.
func (f *file) RemoveXattr(attr string) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if f.fs.readOnly {
		return linux.EROFS
	}
	if err := f.checkXattr(attr); err != nil {
		return err
	}
	return hostErrno(f.withXattr(func(x xattrFD) error { return x.remove(attr) }))
}
