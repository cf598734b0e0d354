package hostfs

import (
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// hostLockType maps a 9P lock type (the values of F_RDLCK, F_WRLCK,
// F_UNLCK in 9P2000.L) to the host's.
func hostLockType(t p9.LockType) (int16, error) {
	switch t {
	case p9.ReadLock:
		return unix.F_RDLCK, nil
	case p9.WriteLock:
		return unix.F_WRLCK, nil
	case p9.Unlock:
		return unix.F_UNLCK, nil
	}
	return 0, linux.EINVAL
}

// lockRange validates a 9P byte range (length 0 means "to the end").
func lockRange(start, length uint64) (int64, int64, error) {
	if start > maxInt64 || length > maxInt64 || (length > 0 && start > maxInt64-(length-1)) {
		return 0, 0, linux.EINVAL
	}
	return int64(start), int64(length), nil
}

// Lock implements p9.File.Lock with an open file description lock
// (F_OFD_SETLK) on the fd Open made, so each open fid is its own lock
// owner. It never blocks: a conflicting request, blocking or not, answers
// LockStatusBlocked and the client retries (Linux's v9fs loops on it for
// F_SETLKW, and reports EAGAIN for F_SETLK). A fid that is not open
// answers EBADF.
func (f *file) Lock(pid int, locktype p9.LockType, flags p9.LockFlags, start, length uint64, client string) (p9.LockStatus, error) {
	if err := f.enter(); err != nil {
		return p9.LockStatusError, err
	}
	defer f.exit()
	of, err := f.openFD()
	if err != nil {
		return p9.LockStatusError, err
	}
	typ, err := hostLockType(locktype)
	if err != nil {
		return p9.LockStatusError, err
	}
	s, l, err := lockRange(start, length)
	if err != nil {
		return p9.LockStatusError, err
	}
	lk := unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: s, Len: l}
	for {
		err := unix.FcntlFlock(uintptr(of.fd), unix.F_OFD_SETLK, &lk)
		switch err {
		case nil:
			return p9.LockStatusOK, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EACCES:
			return p9.LockStatusBlocked, nil
		}
		return p9.LockStatusError, hostErrno(err)
	}
}

// GetLock answers Tgetlock with F_OFD_GETLK on the open fd: the type and
// range of the lock that would conflict with the one described, or type
// Unlock (and the request's own range, pid and client) when none would. A
// fid that is not open answers EBADF. The pid of a conflicting lock is
// always 0: the holder may be a host process, whose PID the guest must
// not learn (and an OFD lock's holder has none: the host reports -1).
func (f *file) GetLock(t p9.LockType, start, length uint64, pid int, client string) (p9.LockType, uint64, uint64, int, string, error) {
	if err := f.enter(); err != nil {
		return 0, 0, 0, 0, "", err
	}
	defer f.exit()
	of, err := f.openFD()
	if err != nil {
		return 0, 0, 0, 0, "", err
	}
	typ, err := hostLockType(t)
	if err != nil || typ == unix.F_UNLCK {
		return 0, 0, 0, 0, "", linux.EINVAL
	}
	s, l, err := lockRange(start, length)
	if err != nil {
		return 0, 0, 0, 0, "", err
	}
	lk := unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: s, Len: l}
	for {
		err := unix.FcntlFlock(uintptr(of.fd), unix.F_OFD_GETLK, &lk)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return 0, 0, 0, 0, "", hostErrno(err)
		}
	}
	switch lk.Type {
	case unix.F_UNLCK:
		return p9.Unlock, start, length, pid, client, nil
	case unix.F_RDLCK:
		return p9.ReadLock, uint64(lk.Start), uint64(lk.Len), 0, "", nil
	}
	return p9.WriteLock, uint64(lk.Start), uint64(lk.Len), 0, "", nil
}
