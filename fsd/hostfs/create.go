package hostfs

import (
	"encoding/binary"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// permBits are the mode bits a guest may set: permissions plus setuid,
// setgid and sticky, all kept exactly (unless NoSetuid).
const permBits = 0o7777

// modeBits returns the mode bits of mode the guest may give an inode:
// permBits, less setuid and setgid under NoSetuid. A directory keeps
// setgid even then: on a directory it only makes new entries inherit its
// group, which grants nothing.
func (fs *FS) modeBits(mode uint32, dir bool) uint32 {
	m := mode & permBits
	if fs.noSetuid {
		m &^= unix.S_ISUID
		if !dir {
			m &^= unix.S_ISGID
		}
	}
	return m
}

// createHook, when set (by tests only), runs when Create, Mkdir, Mknod or
// Symlink has made name in dirfd and before anything is done to the new
// inode: the window in which a host user who can write to the directory
// could rename another inode onto the name. It is nil in production.
var createHook func(dirfd int, name string)

// mutableDir is the common prologue of every operation that creates or
// removes a name in f: f must be a directory of a writable export.
func (f *file) mutableDir() error {
	if f.fs.readOnly {
		return linux.EROFS
	}
	if !f.n.isDir() {
		return linux.ENOTDIR
	}
	return nil
}

// owner returns the ids to give the new inode st describes, and whether
// to chown at all: only when the daemon runs as root, the guest sent a
// valid id, and the inode does not have it already. A new inode gets the
// daemon's fsuid and fsgid (or, beneath a setgid directory, the
// directory's group), so a guest creating as those ids costs no fchown.
func (fs *FS) owner(uid p9.UID, gid p9.GID, st *unix.Stat_t) (int, int, bool) {
	if !fs.chown {
		return -1, -1, false
	}
	u, g := -1, -1
	if uid.Ok() && uint32(uid) != st.Uid {
		u = int(uid)
	}
	if gid.Ok() && uint32(gid) != st.Gid {
		g = int(gid)
	}
	return u, g, u != -1 || g != -1
}

// chownFD gives the inode fd pins to (u, g), acting on a symlink itself.
func chownFD(fd, u, g int) error {
	return unix.Fchownat(fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// chmodFD sets the mode of the inode fd pins (never a symlink) through
// /proc/self/fd, which works on O_PATH fds on every kernel.
func chmodFD(fd int, mode uint32) error {
	return unix.Fchmodat(procSelfFD, fdName(fd), mode, 0)
}

// fixMode makes the permission bits of a new inode exactly want: the
// process umask may have cleared bits, and chown clears setuid/setgid. A
// directory keeps a setgid bit it inherited from a setgid parent, as on
// Linux. st is updated.
func fixMode(fd int, st *unix.Stat_t, want uint32, chowned bool) error {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		want |= st.Mode & unix.S_ISGID
	}
	if st.Mode&permBits == want && !(chowned && want&(unix.S_ISUID|unix.S_ISGID) != 0) {
		return nil
	}
	if err := chmodFD(fd, want); err != nil {
		return err
	}
	st.Mode = st.Mode&^permBits | want
	return nil
}

// undoCreate removes name from dir after a failed create, but only if it
// still names the inode the create made (a racing rename may have put
// something else there).
func (fs *FS) undoCreate(dir *node, name string, made *unix.Stat_t, flags int) {
	var st unix.Stat_t
	if err := lstatat(dir.fd, name, &st); err != nil {
		return
	}
	if st.Dev != made.Dev || st.Ino != made.Ino {
		return
	}
	if err := unlinkat(dir.fd, name, flags); err != nil {
		fs.log.WithFields(logrus.Fields{"name": name, "error": err}).Warn("cannot remove a file whose creation failed")
	}
}

// Create implements p9.File.Create: openat(O_CREAT|O_EXCL|O_NOFOLLOW) in
// this directory with the masked flags and the exact mode, then ownership
// and mode as the guest asked. The new File pins the inode the open
// returned (no second lookup by name) and is already open.
func (f *file) Create(name string, flags p9.OpenFlags, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := checkName(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	if err := f.enter(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	defer f.exit()
	if err := f.mutableDir(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	h, err := hostOpenFlags(flags)
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	want := f.fs.modeBits(uint32(perm), false)
	fd, err := openat(f.n.fd, name, h|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, want)
	if err != nil {
		return nil, p9.QID{}, 0, hostErrno(err)
	}
	var st unix.Stat_t
	qid, err := f.finishOpenCreate(fd, name, want, uid, gid, &st)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	f.n.incRef()
	nf := f.fs.newPinnedFile(fd, &st, qid, f.n, name)
	nf.ownOpen = openFile{fd: fd} // the node's fd: shared
	nf.open.Store(&nf.ownOpen)
	return &nf.file, qid, 0, nil
}

// finishOpenCreate gives the regular file that openat(O_CREAT|O_EXCL) just
// made as name, and fd pins since its creation, the guest's ownership and
// exact mode, and returns its QID and its stat in st. Nothing is looked up
// by name again, so an inode renamed onto name meanwhile is never touched.
// On failure the name is removed if it still names the new inode (fd,
// which the caller closes, keeps its number from being reused).
func (f *file) finishOpenCreate(fd int, name string, want uint32, uid p9.UID, gid p9.GID, st *unix.Stat_t) (p9.QID, error) {
	if h := createHook; h != nil {
		h(f.n.fd, name)
	}
	if err := fstat(fd, st); err != nil {
		return p9.QID{}, hostErrno(err)
	}
	u, g, chown := f.fs.owner(uid, gid, st)
	if chown {
		if err := unix.Fchown(fd, u, g); err != nil {
			f.fs.undoCreate(f.n, name, st, 0)
			return p9.QID{}, hostErrno(err)
		}
	}
	if err := fixMode(fd, st, want, chown); err != nil {
		f.fs.undoCreate(f.n, name, st, 0)
		return p9.QID{}, hostErrno(err)
	}
	qid, err := f.fs.qid(st)
	if err != nil {
		f.fs.undoCreate(f.n, name, st, 0)
		return p9.QID{}, err
	}
	return qid, nil
}

// finishCreate pins the name Mkdir, Mknod (of a FIFO) or Symlink made
// (O_PATH|O_NOFOLLOW, beneath the directory), proves it is the inode just
// made (verifyMade), gives it the guest's ownership and exact mode (not
// a symlink's mode, which Linux ignores), and returns its QID.
//
// Between the make and the pin the new entry is reachable by name only:
// a host user with write access to the directory could rename another
// inode of the same type onto it, and the guest's owner and mode would
// land on that inode (review finding 7). Such an inode fails verifyMade,
// and is left alone (ESTALE, and a warning in the log). On a later
// failure the name is removed if it still names the pinned inode.
func (f *file) finishCreate(name string, typ uint32, want uint32, uid p9.UID, gid p9.GID, target string, unlinkFlags int) (p9.QID, error) {
	if h := createHook; h != nil {
		h(f.n.fd, name)
	}
	var st unix.Stat_t
	fd, err := openComponent(f.n.fd, name, f.fs.noOpenat2)
	if err != nil {
		// Something renamed the new entry away: it is no longer ours.
		return p9.QID{}, hostErrno(err)
	}
	defer unix.Close(fd)
	if err := fstat(fd, &st); err != nil {
		return p9.QID{}, hostErrno(err)
	}
	if reason := f.fs.verifyMade(fd, &st, typ, target); reason != "" {
		f.fs.log.WithFields(logrus.Fields{"name": name, "reason": reason}).Warn(
			"the name a create made now names another inode: left untouched")
		return p9.QID{}, linux.ESTALE
	}
	u, g, chown := f.fs.owner(uid, gid, &st)
	if chown {
		if err := chownFD(fd, u, g); err != nil {
			f.fs.undoCreate(f.n, name, &st, unlinkFlags)
			return p9.QID{}, hostErrno(err)
		}
	}
	if typ != unix.S_IFLNK {
		if err := fixMode(fd, &st, want, chown); err != nil {
			f.fs.undoCreate(f.n, name, &st, unlinkFlags)
			return p9.QID{}, hostErrno(err)
		}
	}
	qid, err := f.fs.qid(&st)
	if err != nil {
		f.fs.undoCreate(f.n, name, &st, unlinkFlags)
		return p9.QID{}, err
	}
	return qid, nil
}

// verifyMade reports why the inode fd pins (st its stat) cannot be the
// one just made as a typ (a symlink to target), or "" when it can: the
// type made, owned by the daemon's euid (a new inode's owner; a host
// user cannot give an inode that owner), and as fresh as a new inode of
// that type is: a FIFO with one link and no data, a directory with no
// entry but "." and ".." (and at most 2 links: btrfs counts 1), a symlink
// to exactly target.
func (fs *FS) verifyMade(fd int, st *unix.Stat_t, typ uint32, target string) string {
	switch {
	case st.Mode&unix.S_IFMT != typ:
		return "another file type"
	case st.Uid != fs.euid:
		return "another owner"
	}
	switch typ {
	case unix.S_IFIFO:
		if st.Nlink != 1 || st.Size != 0 {
			return "a FIFO with other links or data"
		}
	case unix.S_IFDIR:
		if st.Nlink > 2 {
			return "a directory with subdirectories"
		}
		empty, err := emptyDir(fd)
		if err != nil {
			return "a directory that cannot be listed: " + err.Error()
		}
		if !empty {
			return "a directory with entries"
		}
	case unix.S_IFLNK:
		var buf [unix.PathMax]byte
		n, err := unix.Readlinkat(fd, "", buf[:])
		if err != nil {
			return "a symlink that cannot be read: " + err.Error()
		}
		if string(buf[:n]) != target {
			return "a symlink to another target"
		}
	}
	return ""
}

// emptyDir reports whether the directory fd pins holds nothing but "."
// and "..", reading it through a fd reopened for the purpose.
func emptyDir(fd int) (bool, error) {
	dfd, err := reopen(fd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false, err
	}
	defer unix.Close(dfd)
	var buf [512]byte
	for {
		n, err := getdents(dfd, buf[:])
		if err != nil {
			return false, err
		}
		if n == 0 {
			return true, nil
		}
		for pos := 0; pos < n; {
			rec := buf[pos:n]
			if len(rec) < hostDirentName {
				return false, unix.EIO
			}
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < hostDirentName || reclen > len(rec) {
				return false, unix.EIO
			}
			if name := string(direntName(rec[hostDirentName:reclen])); name != "." && name != ".." {
				return false, nil
			}
			pos += reclen
		}
	}
}

// Mkdir implements p9.File.Mkdir with the exact mode and the guest's
// ownership.
func (f *file) Mkdir(name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	if err := f.enter(); err != nil {
		return p9.QID{}, err
	}
	defer f.exit()
	if err := f.mutableDir(); err != nil {
		return p9.QID{}, err
	}
	want := f.fs.modeBits(uint32(perm), true)
	// Made owner-only: nobody but the daemon's uid can put anything in
	// it before finishCreate has checked it and set the guest's mode.
	if err := unix.Mkdirat(f.n.fd, name, 0o700); err != nil {
		return p9.QID{}, hostErrno(err)
	}
	return f.finishCreate(name, unix.S_IFDIR, want, uid, gid, "", unix.AT_REMOVEDIR)
}

// Symlink implements p9.File.Symlink. The target is stored verbatim and
// hostfs never resolves it.
func (f *file) Symlink(target string, newName string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := checkName(newName); err != nil {
		return p9.QID{}, err
	}
	switch {
	case target == "":
		return p9.QID{}, linux.ENOENT
	case len(target) >= unix.PathMax:
		return p9.QID{}, linux.ENAMETOOLONG
	}
	if err := f.enter(); err != nil {
		return p9.QID{}, err
	}
	defer f.exit()
	if err := f.mutableDir(); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(target, f.n.fd, newName); err != nil {
		return p9.QID{}, hostErrno(err)
	}
	return f.finishCreate(newName, unix.S_IFLNK, 0, uid, gid, target, 0)
}

// Mknod implements p9.File.Mknod for regular files and FIFOs only. Device
// nodes and sockets answer EPERM: a guest must never get a host device,
// and a socket inode would be a rendezvous with host processes.
func (f *file) Mknod(name string, mode p9.FileMode, major uint32, minor uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	typ := uint32(mode) & unix.S_IFMT
	switch typ {
	case 0, unix.S_IFREG:
		typ = unix.S_IFREG
	case unix.S_IFIFO:
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFSOCK, unix.S_IFDIR:
		return p9.QID{}, linux.EPERM
	default:
		return p9.QID{}, linux.EINVAL
	}
	if err := f.enter(); err != nil {
		return p9.QID{}, err
	}
	defer f.exit()
	if err := f.mutableDir(); err != nil {
		return p9.QID{}, err
	}
	want := f.fs.modeBits(uint32(mode), false)
	if typ == unix.S_IFREG {
		// A regular file is made as Create makes one, pinned from its
		// creation.
		fd, err := openat(f.n.fd, name, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, want)
		if err != nil {
			return p9.QID{}, hostErrno(err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		return f.finishOpenCreate(fd, name, want, uid, gid, &st)
	}
	if err := unix.Mknodat(f.n.fd, name, typ|want, 0); err != nil {
		return p9.QID{}, hostErrno(err)
	}
	return f.finishCreate(name, typ, want, uid, gid, "", 0)
}

// Link implements p9.File.Link: a new name in this directory for the inode
// target pins, a symlink itself when target is one. linkat with
// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; without it hostfs links through
// /proc/self/fd (AT_SYMLINK_FOLLOW follows the magic link to the pinned
// inode and no further) and checks the new name names that inode.
func (f *file) Link(target p9.File, newName string) error {
	if err := checkName(newName); err != nil {
		return err
	}
	t, err := f.sameFS(target)
	if err != nil {
		return err
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if err := t.enter(); err != nil {
		return err
	}
	defer t.exit()
	if err := f.mutableDir(); err != nil {
		return err
	}
	if t.n.isDir() {
		return linux.EPERM
	}
	if !f.fs.noEmptyPath {
		err := unix.Linkat(t.n.fd, "", f.n.fd, newName, unix.AT_EMPTY_PATH)
		if err != unix.ENOENT && err != unix.EPERM {
			return hostErrno(err)
		}
	}
	if err := unix.Linkat(procSelfFD, fdName(t.n.fd), f.n.fd, newName, unix.AT_SYMLINK_FOLLOW); err != nil {
		return hostErrno(err)
	}
	var st unix.Stat_t
	if err := lstatat(f.n.fd, newName, &st); err != nil {
		return hostErrno(err)
	}
	if !t.n.sameInode(&st) {
		// Not what was pinned (a racing rename, or a kernel that
		// followed further): take the name back, never keep it.
		if err := unlinkat(f.n.fd, newName, 0); err != nil {
			f.fs.log.WithFields(logrus.Fields{"name": newName, "error": err}).Warn("cannot remove a mismatched hard link")
		}
		return linux.EXDEV
	}
	return nil
}

// RenameAt implements p9.File.RenameAt: renameat between two pinned
// directories of this export.
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	nd, err := f.sameFS(newDir)
	if err != nil {
		return err
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if err := nd.enter(); err != nil {
		return err
	}
	defer nd.exit()
	if err := f.mutableDir(); err != nil {
		return err
	}
	if !nd.n.isDir() {
		return linux.ENOTDIR
	}
	return hostErrno(unix.Renameat(f.n.fd, oldName, nd.n.fd, newName))
}

// Rename implements p9.File.Rename: renames the file this File names
// (its parent's entry, checked to still name the pinned inode).
func (f *file) Rename(newDir p9.File, newName string) error {
	if err := checkName(newName); err != nil {
		return err
	}
	nd, err := f.sameFS(newDir)
	if err != nil {
		return err
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if err := nd.enter(); err != nil {
		return err
	}
	defer nd.exit()
	if f.fs.readOnly {
		return linux.EROFS
	}
	if !nd.n.isDir() {
		return linux.ENOTDIR
	}
	parent, name, err := f.parentAndName()
	if err != nil {
		return err
	}
	defer parent.decRef()
	if err := f.stillNamed(parent, name); err != nil {
		return err
	}
	if err := unix.Renameat(parent.fd, name, nd.n.fd, newName); err != nil {
		return hostErrno(err)
	}
	nd.n.incRef()
	f.mu.Lock()
	old := f.parent
	f.parent, f.name = nd.n, newName
	f.mu.Unlock()
	if old != nil {
		old.decRef()
	}
	return nil
}

// stillNamed checks that name in parent still names f's pinned inode.
func (f *file) stillNamed(parent *node, name string) error {
	var st unix.Stat_t
	if err := lstatat(parent.fd, name, &st); err != nil {
		if err == unix.ENOENT {
			return linux.ESTALE
		}
		return hostErrno(err)
	}
	if !f.n.sameInode(&st) {
		return linux.ESTALE
	}
	return nil
}

// UnlinkAt implements p9.File.UnlinkAt. flags may hold AT_REMOVEDIR
// (0x200, the same value in 9P2000.L); a non-empty directory answers
// ENOTEMPTY.
func (f *file) UnlinkAt(name string, flags uint32) error {
	if err := checkName(name); err != nil {
		return err
	}
	if flags&^unix.AT_REMOVEDIR != 0 {
		return linux.EINVAL
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if err := f.mutableDir(); err != nil {
		return err
	}
	return hostErrno(unlinkat(f.n.fd, name, int(flags)))
}

// Remove unlinks the file this File names (Tremove; the server clunks the
// fid afterwards). The name is checked to still name the pinned inode
// (ESTALE otherwise); a directory is removed with AT_REMOVEDIR.
func (f *file) Remove() error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.exit()
	if f.fs.readOnly {
		return linux.EROFS
	}
	parent, name, err := f.parentAndName()
	if err != nil {
		return err
	}
	defer parent.decRef()
	if err := f.stillNamed(parent, name); err != nil {
		return err
	}
	flags := 0
	if f.n.isDir() {
		flags = unix.AT_REMOVEDIR
	}
	return hostErrno(unlinkat(parent.fd, name, flags))
}
