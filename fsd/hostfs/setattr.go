package hostfs

import (
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// SetAttr implements p9.File.SetAttr on the pinned inode, in the order
// size, owner, mode, times: a truncate cannot clobber a requested mtime,
// and a requested setuid/setgid bit survives the chown that clears it.
// Everything is validated before anything changes. On a symlink File the
// link itself changes (owner, times) and chmod answers EOPNOTSUPP, as
// fchmodat(AT_SYMLINK_NOFOLLOW) does on Linux. The mode and owner of a
// device node are never changed (EPERM): hostfs never opens one for the
// guest, but a guest's chmod 0666 or chown of a host device node in the
// export would let host users open it. Under NoSetuid the setuid and
// setgid bits are stripped from the mode (setgid kept on a directory).
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if !valid.Permissions && !valid.UID && !valid.GID && !valid.Size && !valid.ATime && !valid.MTime {
		// Nothing to change (a bare CTime asks for what any change
		// does anyway).
		return nil
	}
	if f.fs.readOnly {
		return linux.EROFS
	}
	if valid.Size {
		switch {
		case f.n.isDir():
			return linux.EISDIR
		case !f.n.isRegular():
			return linux.EINVAL
		case attr.Size > maxInt64:
			return linux.EINVAL
		}
	}
	if valid.Permissions && f.n.isSymlink() {
		return linux.EOPNOTSUPP
	}
	if (valid.Permissions || valid.UID || valid.GID) && f.n.isDevice() {
		return linux.EPERM
	}
	if (valid.ATime && valid.ATimeNotSystemTime && attr.ATimeNanoSeconds >= 1e9) ||
		(valid.MTime && valid.MTimeNotSystemTime && attr.MTimeNanoSeconds >= 1e9) {
		return linux.EINVAL
	}

	if valid.Size {
		fd, err := reopen(f.n.fd, unix.O_WRONLY)
		if err != nil {
			return hostErrno(err)
		}
		err = unix.Ftruncate(fd, int64(attr.Size))
		unix.Close(fd)
		if err != nil {
			return hostErrno(err)
		}
	}
	if valid.UID || valid.GID {
		u, g := -1, -1
		if valid.UID && attr.UID.Ok() {
			u = int(attr.UID)
		}
		if valid.GID && attr.GID.Ok() {
			g = int(attr.GID)
		}
		if err := chownFD(f.n.fd, u, g); err != nil {
			return hostErrno(err)
		}
	}
	if valid.Permissions {
		if err := chmodFD(f.n.fd, f.fs.modeBits(uint32(attr.Permissions), f.n.isDir())); err != nil {
			return hostErrno(err)
		}
	}
	if valid.ATime || valid.MTime {
		ts := [2]unix.Timespec{
			timespec(valid.ATime, valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds),
			timespec(valid.MTime, valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds),
		}
		if err := f.utimes(&ts); err != nil {
			return err
		}
	}
	return nil
}

// timespec is one utimensat time: omitted, "now", or explicit.
func timespec(set, explicit bool, sec, nsec uint64) unix.Timespec {
	switch {
	case !set:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case !explicit:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// utimes sets the times of the pinned inode (a symlink itself): utimensat
// on the fd with AT_EMPTY_PATH; where the kernel refuses that flag, through
// /proc/self/fd for other files, and through the parent and name with
// AT_SYMLINK_NOFOLLOW, after checking the name still names the link, for
// a symlink.
func (f *file) utimes(ts *[2]unix.Timespec) error {
	if !utimesEmptyPathMissing.Load() && !f.fs.noEmptyPath {
		err := unix.UtimesNanoAt(f.n.fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINVAL {
			return hostErrno(err)
		}
		// The times were validated, so EINVAL means the kernel does
		// not know AT_EMPTY_PATH here.
		utimesEmptyPathMissing.Store(true)
	}
	if !f.n.isSymlink() {
		return hostErrno(unix.UtimesNanoAt(procSelfFD, fdName(f.n.fd), ts[:], 0))
	}
	parent, name, err := f.parentAndName()
	if err != nil {
		return err
	}
	defer parent.decRef()
	if err := f.stillNamed(parent, name); err != nil {
		return err
	}
	return hostErrno(unix.UtimesNanoAt(parent.fd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW))
}
