package sandbox

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// nsID identifies a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func mountNS(pid string) (nsID, error) {
	var st unix.Stat_t
	p := "/proc/" + pid + "/ns/mnt"
	if err := unix.Stat(p, &st); err != nil {
		return nsID{}, errors.Wrapf(err, "stat %s", p)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// InPrivateMountNS reports whether no other process shares this process's
// mount namespace: pivot_root in a shared namespace would change the root of
// every process in it whose root is the old one, so namespace mode refuses
// unless this is true.
//
// The parent must be readable and in another namespace (it is when the
// launcher starts the daemon with CLONE_NEWNS, or `unshare -m` execs it);
// every other process visible in /proc, PID 1 included, must be in another
// namespace as well. A process that cannot be inspected (gone, or protected
// from ptrace-read even for root) is skipped.
func InPrivateMountNS() (bool, error) {
	self, err := mountNS("self")
	if err != nil {
		return false, &StepError{Step: "read own mount namespace", Err: err}
	}
	if ppid := os.Getppid(); ppid > 0 {
		parent, err := mountNS(strconv.Itoa(ppid))
		if err != nil {
			return false, &StepError{Step: "read parent's mount namespace", Err: err}
		}
		if parent == self {
			return false, nil
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, &StepError{Step: "list processes", Path: "/proc", Err: errors.WithStack(err)}
	}
	// Our own entry, as this /proc numbers it (it may belong to another
	// pid namespace than ours).
	me, err := os.Readlink("/proc/self")
	if err != nil {
		return false, &StepError{Step: "readlink", Path: "/proc/self", Err: errors.WithStack(err)}
	}
	for _, e := range entries {
		name := e.Name()
		if name == me || name[0] < '0' || name[0] > '9' {
			continue
		}
		if ns, err := mountNS(name); err == nil && ns == self {
			return false, nil
		}
	}
	return true, nil
}

// prepareRoot turns root into the mount that pivotInto will make "/":
// the namespace's mounts become slaves (host mounts made later still
// propagate in, as Kata adds container mounts under its shared directory;
// nothing done here propagates back), root is bind-mounted onto itself with
// its submounts, a procfs at root/proc is detached, and the new mounts get
// nosuid, nodev and, for a read-only export, rdonly.
func prepareRoot(root string, readOnly bool, log *logrus.Entry) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return &StepError{Step: "make mounts rslave", Path: "/", Err: errors.WithStack(err)}
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return &StepError{Step: "bind-mount root onto itself", Path: root, Err: errors.WithStack(err)}
	}
	if err := detachProc(filepath.Join(root, "proc"), log); err != nil {
		return err
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if readOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	err := unix.MountSetattr(unix.AT_FDCWD, root, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr})
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.12: remount the top mount only, keeping its flags.
		err = remountBind(root, readOnly)
	}
	if err != nil {
		return &StepError{Step: "set mount attributes (nosuid,nodev,ro)", Path: root, Err: errors.WithStack(err)}
	}
	return nil
}

// remountBind adds nosuid, nodev and maybe rdonly to the bind mount at
// root, keeping the flags it has (a bind remount replaces them).
func remountBind(root string, readOnly bool) error {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
	for _, f := range []struct{ st, ms int64 }{
		{unix.ST_RDONLY, unix.MS_RDONLY},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return unix.Mount("", root, "", flags, "")
}

// detachProc detaches every procfs stacked at p (a container rootfs may
// have one mounted), in the daemon's own namespace. A symlink at p is left
// alone: it is resolved inside the export after the pivot.
func detachProc(p string, log *logrus.Entry) error {
	for {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return &StepError{Step: "open", Path: p, Err: errors.WithStack(err)}
		}
		var st unix.Statfs_t
		err = unix.Fstatfs(fd, &st)
		unix.Close(fd)
		if err != nil {
			return &StepError{Step: "statfs", Path: p, Err: errors.WithStack(err)}
		}
		if st.Type != unix.PROC_SUPER_MAGIC {
			return nil
		}
		if err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return &StepError{Step: "detach procfs", Path: p, Err: errors.WithStack(err)}
		}
		log.WithField("path", p).Info("detached procfs mounted inside the export")
	}
}

// mountProc mounts a fresh procfs over /proc, in the daemon's own mount
// namespace, for the /proc/self/fd handle hostfs opens next and keeps after
// the pivot. A handle on the host's procfs would be a way out for a
// compromised daemon: "../.." from it is the host's /proc, with
// /proc/sys/kernel/core_pattern (root may write it) and every host
// process's /proc/PID/root. The fresh one is mounted with subset=pid
// (Linux 5.8+: no /proc/sys, no other global files) and nosuid, nodev,
// noexec, and shows only the daemon's pid namespace: the launcher starts
// the daemon in a new one (CLONE_NEWPID), where the daemon is the only
// process. Without subset=pid (EINVAL: an older kernel) it mounts a full
// procfs and warns; outside a pid namespace of its own it warns that other
// processes stay visible.
func mountProc(log *logrus.Entry) error {
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	err := unix.Mount("proc", "/proc", "proc", flags, "subset=pid")
	if errors.Is(err, unix.EINVAL) {
		log.Warn("procfs has no subset=pid here (Linux < 5.8): the daemon's /proc handle still shows /proc/sys")
		err = unix.Mount("proc", "/proc", "proc", flags, "")
	}
	if err != nil {
		return &StepError{Step: "mount a fresh procfs", Path: "/proc", Err: errors.WithStack(err)}
	}
	if os.Getpid() != 1 {
		log.Warn("not in a pid namespace of its own: the daemon's /proc handle shows every process of its pid namespace (start it through the launcher, or with unshare -m -p -f)")
	}
	return nil
}

// pivotInto makes root (the bind mount prepareRoot made) the root of the
// mount namespace and detaches the old root, so nothing outside root is
// reachable by path. The sequence is pivot_root(".", "."), which stacks the
// old root on top of the new one, then unmounting the old root from there
// (as runc does).
func pivotInto(root string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &StepError{Step: "open old root", Path: "/", Err: errors.WithStack(err)}
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &StepError{Step: "open new root", Path: root, Err: errors.WithStack(err)}
	}
	defer unix.Close(newRoot)

	if err := unix.Fchdir(newRoot); err != nil {
		return &StepError{Step: "chdir", Path: root, Err: errors.WithStack(err)}
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return &StepError{Step: "pivot_root", Path: root, Err: errors.WithStack(err)}
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return &StepError{Step: "chdir to old root", Err: errors.WithStack(err)}
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return &StepError{Step: "detach old root", Err: errors.WithStack(err)}
	}
	if err := unix.Chdir("/"); err != nil {
		return &StepError{Step: "chdir", Path: "/", Err: errors.WithStack(err)}
	}
	return nil
}

// chrootInto changes the root directory of the process (every thread: Go
// threads share fs state) to root.
func chrootInto(root string) error {
	if err := unix.Chroot(root); err != nil {
		return &StepError{Step: "chroot", Path: root, Err: errors.WithStack(err)}
	}
	if err := unix.Chdir("/"); err != nil {
		return &StepError{Step: "chdir", Path: "/", Err: errors.WithStack(err)}
	}
	return nil
}

// procUnreachable checks that no procfs answers at /proc any more. In
// namespace mode prepareRoot detached it; in chroot mode a procfs mounted
// inside the export cannot be detached (the namespace may be shared).
func procUnreachable() error {
	var st unix.Statfs_t
	err := unix.Statfs("/proc", &st)
	if err == nil && st.Type == unix.PROC_SUPER_MAGIC {
		return &StepError{Step: "check", Path: "/proc", Err: errors.WithStack(ErrProcReachable)}
	}
	return nil
}

// OpenExport opens the root directory of an extra export (any export but
// Config.Root) for hostfs.WithRootFD, between Prepare and Apply, and
// returns the fd (close-on-exec, O_PATH), which the caller owns.
//
// In namespace mode the fd is a detached recursive clone of the export's
// mount tree (open_tree(2) with OPEN_TREE_CLONE|AT_RECURSIVE) with nosuid,
// nodev and, when readOnly, rdonly set on every mount of the clone: a
// mount of its own whose root is the export. A plain fd would not do
// there: Apply's pivot detaches the host's tree, and with it the mount
// such an fd is on, which then loses the export's submounts and whose
// ".." leads into the detached host tree. The clone keeps the submounts,
// ".." at its root stays at its root, and a read-only export is read-only
// for the kernel too. Mounts the host adds under the export later are
// not seen (they would not be through a plain fd either). Where the
// kernel has no open_tree (ENOSYS, before Linux 5.2) or refuses it (EPERM,
// or EINVAL for an unbindable mount), OpenExport falls back to the plain
// open, with a warning.
//
// In chroot and none modes it is a plain open(O_PATH|O_DIRECTORY): the
// host's tree stays attached, so the fd sees the export's submounts and
// later mounts; a clone would lose the later ones, and in chroot mode,
// which may run in the host's mount namespace (no mounts made slave
// first), a clone of a shared mount would join the host's peer group.
//
// Do not use it for the root export: open that one by path after Prepare
// (hostfs.New does), so that its fd is on the mount that becomes "/" and
// keeps receiving the mounts the host adds later (see the package comment).
func (s *Sandbox) OpenExport(path string, readOnly bool) (int, error) {
	if s.applied {
		return -1, errors.Wrapf(ErrApplied, "open extra export %s", path)
	}
	log := s.log.WithField("export", path)
	if s.mode == ModeNamespace {
		fd, err := openTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		switch {
		case err == nil:
			return setupClone(fd, path, readOnly, log)
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL):
			log.WithError(err).Warn("cannot clone the extra export's mount tree; opening it in place (its submounts are lost at the pivot)")
		default:
			return -1, &StepError{Step: "clone the mount tree of extra export", Path: path, Err: errors.WithStack(err)}
		}
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &StepError{Step: "open extra export", Path: path, Err: errors.WithStack(err)}
	}
	return fd, nil
}

// openTree is open_tree(2); a variable so that a test can make the kernel
// lack it.
var openTree = unix.OpenTree

// setupClone checks that fd, a clone of path's mount tree (see
// OpenExport), is a directory and sets its mount attributes. It closes fd
// on error.
func setupClone(fd int, path string, readOnly bool, log *logrus.Entry) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &StepError{Step: "stat extra export", Path: path, Err: errors.WithStack(err)}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return -1, &StepError{Step: "open extra export", Path: path, Err: errors.WithStack(unix.ENOTDIR)}
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if readOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr})
	switch {
	case errors.Is(err, unix.ENOSYS):
		// Before Linux 5.12: the clone keeps the host mount's flags;
		// hostfs still refuses every mutation of a read-only export.
		log.WithError(err).Warn("cannot set nosuid,nodev,ro on the extra export's mount clone")
	case err != nil:
		unix.Close(fd)
		return -1, &StepError{Step: "set mount attributes (nosuid,nodev,ro) of extra export", Path: path, Err: errors.WithStack(err)}
	}
	log.Info("extra export served through a detached clone of its mount tree")
	return fd, nil
}
