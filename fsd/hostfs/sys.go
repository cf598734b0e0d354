package hostfs

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// procSelfFD is a directory handle on /proc/self/fd, opened once, before
// the daemon pivots away from /proc (gVisor's gofer does the same). It is
// how a pinned O_PATH fd is reopened for I/O, chmod'ed or given xattrs
// without resolving any path string from the export root: the entry
// "/proc/self/fd/N" is a magic link that the kernel resolves to the exact
// dentry fd N pins, whatever has been renamed or swapped on the host since.
//
// Magic links and safety: resolution through the entry never re-reads a
// path; it jumps to the pinned dentry and stops there (a pinned symlink is
// not followed further: chown, utimensat and linkat through it act on the
// link, and open(2) of it fails with ELOOP). Even so, hostfs opens through
// procSelfFD only regular files and directories (whose type a pinned fd
// cannot change); chmod and utimensat go through it for any inode but a
// symlink, and never open it; linkat's fallback goes through it for any
// inode and checks afterwards that the new name is the pinned inode.
// O_NOFOLLOW must not be passed on that path: it would refuse the magic
// link itself (ELOOP).
var (
	procSelfFDOnce sync.Once
	procSelfFD     = -1
	procSelfFDErr  error
)

// openProcSelfFD opens procSelfFD on first use. It is never closed: every
// FS of the process shares it for the life of the process.
func openProcSelfFD() error {
	procSelfFDOnce.Do(func() {
		fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			procSelfFDErr = errors.Wrap(err, "open /proc/self/fd (hostfs needs it before the sandbox hides /proc)")
			return
		}
		procSelfFD = fd
	})
	return procSelfFDErr
}

// fdName is the entry of procSelfFD that names fd.
func fdName(fd int) string {
	return strconv.Itoa(fd)
}

// cname is a NUL-terminated path component or /proc/self/fd entry for a
// system call, built in the caller's frame: the hot paths (walk, create,
// unlink, reopen) hand names to the kernel through it and the raw calls
// below, where golang.org/x/sys/unix would allocate a copy of every name
// (BytePtrFromString).
type cname [unix.NAME_MAX + 1]byte

// set copies name into c with its NUL and returns its first byte. A name
// that cannot be one component answers ENAMETOOLONG (too long) or EINVAL
// (it holds a NUL), as unix.BytePtrFromString would.
func (c *cname) set(name string) (*byte, error) {
	if len(name) > unix.NAME_MAX {
		return nil, unix.ENAMETOOLONG
	}
	if strings.IndexByte(name, 0) >= 0 {
		return nil, unix.EINVAL
	}
	c[copy(c[:], name)] = 0
	return &c[0], nil
}

// setFD writes the procSelfFD entry of fd (its decimal number) into c and
// returns its first byte.
func (c *cname) setFD(fd int) *byte {
	b := strconv.AppendInt(c[:0], int64(fd), 10)
	c[len(b)] = 0
	return &c[0]
}

// The raw system calls of the hot paths. name points into a cname that
// the caller keeps alive for the call (the conversion to uintptr in the
// call expression keeps what it points to alive until the call returns).

func openatRaw(dirfd int, name *byte, flags int, mode uint32) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(flags), uintptr(mode), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func openat2Raw(dirfd int, name *byte, how *unix.OpenHow) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(how)), unsafe.Sizeof(*how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func unlinkatRaw(dirfd int, name *byte, flags int) error {
	_, _, e := unix.Syscall(unix.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(flags))
	if e != 0 {
		return e
	}
	return nil
}

// openat opens name beneath dirfd (openat(2)), retrying EINTR, without
// allocating.
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	var c cname
	p, err := c.set(name)
	if err != nil {
		return -1, err
	}
	for {
		fd, err := openatRaw(dirfd, p, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// unlinkat removes name beneath dirfd (unlinkat(2)) without allocating.
func unlinkat(dirfd int, name string, flags int) error {
	var c cname
	p, err := c.set(name)
	if err != nil {
		return err
	}
	return unlinkatRaw(dirfd, p, flags)
}

// lstatat stats name beneath dirfd without following a symlink. It is
// off the hot paths (Remove, Rename, Link, undoing a create), so it uses
// unix.Fstatat, whose system call differs between architectures.
func lstatat(dirfd int, name string, st *unix.Stat_t) error {
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// reopen opens the inode pinned by fd again with the given flags, through
// procSelfFD. Callers only pass fds of regular files and directories.
func reopen(fd int, flags int) (int, error) {
	var c cname
	p := c.setFD(fd)
	for {
		nfd, err := openatRaw(procSelfFD, p, flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return nfd, err
		}
	}
}

// Kernel feature probes, shared by every FS: set once a call answers
// ENOSYS, after which the fallback is used directly.
var (
	openat2Missing         atomic.Bool
	xattratMissing         atomic.Bool
	utimesEmptyPathMissing atomic.Bool // utimensat rejected AT_EMPTY_PATH (EINVAL)
)

// openHowComponent is the openat2 request for one walk step: the pinned
// O_PATH fd of a single name beneath dirfd, never following a symlink or a
// magic link, never leaving dirfd's subtree.
var openHowComponent = unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
}

// openComponent opens name (one validated component) beneath dirfd as an
// O_PATH fd, with openat2 when the kernel has it and openat with O_NOFOLLOW
// otherwise (or when noOpenat2 forces the fallback).
func openComponent(dirfd int, name string, noOpenat2 bool) (int, error) {
	var c cname
	p, err := c.set(name)
	if err != nil {
		return -1, err
	}
	if !noOpenat2 && !openat2Missing.Load() {
		for again := 0; ; again++ {
			fd, err := openat2Raw(dirfd, p, &openHowComponent)
			switch {
			case err == nil:
				return fd, nil
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN && again < 8:
				// A concurrent rename raced the RESOLVE_BENEATH
				// check; retry as the kernel asks, a bounded
				// number of times (renames are guest-driven).
				continue
			case err == unix.ENOSYS:
				openat2Missing.Store(true)
			default:
				return -1, err
			}
			break
		}
	}
	for {
		fd, err := openatRaw(dirfd, p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// xattrArgs is struct xattr_args of the *xattrat system calls (Linux 6.13):
// an __aligned_u64 pointer, then two u32. The pointer field is typed so the
// garbage collector keeps the buffer alive; the layout matches on 64-bit
// hosts only, so 32-bit hosts use the fallback (see xattratUsable).
type xattrArgs struct {
	value *byte
	size  uint32
	flags uint32
}

// xattratUsable reports whether the *xattrat calls may be tried: the kernel
// has not answered ENOSYS, and xattrArgs has the kernel's layout.
func xattratUsable() bool {
	return unsafe.Sizeof(xattrArgs{}) == 16 && !xattratMissing.Load()
}

// xattrat calls getxattrat or setxattrat (they share a signature) on
// procSelfFD's entry for fd, following that magic link to the pinned inode.
func xattrat(trap uintptr, fd int, name string, buf []byte, flags int) (int, error) {
	path, err := unix.BytePtrFromString(fdName(fd))
	if err != nil {
		return 0, err
	}
	attr, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(buf)), flags: uint32(flags)}
	if len(buf) > 0 {
		args.value = &buf[0]
	}
	r, _, e := unix.Syscall6(trap, uintptr(procSelfFD), uintptr(unsafe.Pointer(path)), 0,
		uintptr(unsafe.Pointer(attr)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(path)
	runtime.KeepAlive(attr)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// listxattrat calls listxattrat on procSelfFD's entry for fd.
func listxattrat(fd int, buf []byte) (int, error) {
	path, err := unix.BytePtrFromString(fdName(fd))
	if err != nil {
		return 0, err
	}
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(procSelfFD), uintptr(unsafe.Pointer(path)), 0,
		uintptr(p), uintptr(len(buf)), 0)
	runtime.KeepAlive(path)
	runtime.KeepAlive(buf)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// removexattrat calls removexattrat on procSelfFD's entry for fd.
func removexattrat(fd int, name string) error {
	path, err := unix.BytePtrFromString(fdName(fd))
	if err != nil {
		return err
	}
	attr, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(procSelfFD), uintptr(unsafe.Pointer(path)), 0,
		uintptr(unsafe.Pointer(attr)), 0, 0)
	runtime.KeepAlive(path)
	runtime.KeepAlive(attr)
	if e != 0 {
		return e
	}
	return nil
}
