// Package socket pre-opens the listening unix socket a file daemon serves,
// hands it to the daemon as an inherited fd, and answers questions about it
// later (is anything listening, does process N hold it) without disturbing a
// daemon that serves only one connection.
//
// The launcher owns the socket: it creates it with Listen before it starts
// the daemon, passes ListenerFile's copy through exec.Cmd.ExtraFiles (fd 3),
// and closes its own copies once the child has started. The daemon rebuilds
// the listener with FromFD. Remove deletes the socket file when the daemon is
// gone.
//
// The package never logs; callers decide what is worth a line.
package socket

import (
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// MaxPathLen is the longest socket path bind(2) accepts: sun_path holds 108
// bytes including the terminating NUL.
const MaxPathLen = 107

// Sentinel errors; every error this package returns for one of these
// conditions satisfies errors.Is with the sentinel and names the path or fd.
var (
	// ErrInUse means a live listener answers at the path.
	ErrInUse = errors.New("socket is in use")
	// ErrNotSocket means the path exists and is not a socket (a symlink
	// counts as not a socket, whatever it points to).
	ErrNotSocket = errors.New("path exists and is not a socket")
	// ErrPathTooLong means the path does not fit in sun_path.
	ErrPathTooLong = errors.New("socket path too long")
	// ErrNotListener means an inherited fd is not a listening unix stream
	// socket.
	ErrNotListener = errors.New("not a listening unix stream socket")
	// ErrNoListener means no listening socket is bound at the path.
	ErrNoListener = errors.New("no listening socket bound at path")
)

// afterBind is a test hook called right after bind(2) created the file.
var afterBind func(path string)

// listenBacklog is the backlog passed to listen(2); the kernel caps it at
// net.core.somaxconn.
const listenBacklog = unix.SOMAXCONN

// Listen creates a listening unix stream socket at path whose file has
// permission mode, ready to be handed to a daemon.
//
// The parent directory is created with mode 0700 if it is missing (only the
// missing levels; existing directories are left alone). An existing path is
// handled like this: a symlink or anything else that is not a socket is
// refused with ErrNotSocket and left untouched; a socket with a live listener
// is refused with ErrInUse; a stale socket (nothing listening, left by a
// crashed run) is removed and replaced. Listen logs nothing: a caller that
// wants to report the stale socket asks Stale first.
//
// There is no moment at which the socket file is more open than mode: the
// socket's inode is fchmod'ed to mode before bind(2), and the kernel creates
// the file with that mode minus the umask; if the umask removed bits, the
// file is then chmod'ed up to mode through an O_PATH fd. This avoids
// changing the process-wide umask, which would race with every other
// goroutine that creates files.
//
// The returned listener does not unlink the socket file when it is closed
// (SetUnlinkOnClose(false)): the parent closes its copy after handing the
// socket to the child, and the child keeps serving it.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if mode&^os.ModePerm != 0 {
		return nil, errors.Errorf("socket %s: mode %#o has bits outside 0777", path, uint32(mode))
	}
	dir := filepath.Dir(path)
	if err := mkdirParents(dir); err != nil {
		return nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := clearStale(path); err != nil {
		return nil, err
	}
	return bindListen(path, uint32(mode.Perm()))
}

// lockDir takes an exclusive flock on dir for the check-remove-bind-listen
// sequence. Without it, two launchers racing for the same path could both
// find it stale, and the second would remove the first one's fresh socket
// (it is not listening yet between bind and listen) and bind its own. The
// lock is held for microseconds and only excludes other Listen calls.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "open socket directory %s", dir)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, errors.Wrapf(err, "lock socket directory %s", dir)
	}
	return func() { unix.Close(fd) }, nil // closing releases the lock
}

// checkPath rejects paths bind(2) cannot take.
func checkPath(path string) error {
	switch {
	case path == "":
		return errors.New("socket path is empty")
	case len(path) > MaxPathLen:
		return errors.Wrapf(ErrPathTooLong, "socket path %s is %d bytes, the limit is %d", path, len(path), MaxPathLen)
	}
	for i := 0; i < len(path); i++ {
		if path[i] == 0 {
			return errors.Errorf("socket path %q contains a NUL byte", path)
		}
	}
	return nil
}

// mkdirParents creates dir and its missing ancestors with mode 0700.
// Directories that already exist are not touched.
func mkdirParents(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return errors.Errorf("socket directory %s: %s is not a directory", dir, d)
			}
			break
		}
		if !os.IsNotExist(err) {
			return errors.Wrapf(err, "socket directory %s", dir)
		}
		missing = append(missing, d)
		if parent := filepath.Dir(d); parent == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		err := unix.Mkdir(d, 0o700)
		if err == unix.EEXIST {
			// Created by someone else meanwhile: not ours to chmod.
			fi, serr := os.Stat(d)
			if serr != nil {
				return errors.Wrapf(serr, "socket directory %s", d)
			}
			if !fi.IsDir() {
				return errors.Errorf("socket directory %s: %s is not a directory", dir, d)
			}
			continue
		}
		if err != nil {
			return errors.Wrapf(err, "create socket directory %s", d)
		}
		if err := fixDirMode(d); err != nil {
			return err
		}
	}
	return nil
}

// fixDirMode makes a directory Listen just created exactly 0700, in case the
// umask removed owner bits. It works on an O_PATH fd opened without
// following a symlink (so a swapped entry is never chmod'ed, and a directory
// the umask left unreadable can still be fixed).
func fixDirMode(d string) error {
	fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Wrapf(err, "open socket directory %s", d)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errors.Wrapf(err, "stat socket directory %s", d)
	}
	if st.Mode&0o7777 == 0o700 {
		return nil
	}
	if err := chmodFD(fd, 0o700); err != nil {
		return errors.Wrapf(err, "chmod socket directory %s", d)
	}
	return nil
}

// chmodFD changes the mode of the file an O_PATH fd refers to:
// fchmodat2(AT_EMPTY_PATH) on Linux 6.6+, else chmod through the fd's
// /proc magic link, which names the same inode.
func chmodFD(pfd int, mode uint32) error {
	var err error = unix.ENOSYS
	if useFchmodat2 {
		err = unix.Fchmodat(pfd, "", mode, unix.AT_EMPTY_PATH)
	}
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS || err == unix.EINVAL {
		err = unix.Chmod("/proc/self/fd/"+strconv.Itoa(pfd), mode)
	}
	return err
}

// useFchmodat2 is a test hook: false exercises the older kernels' path.
var useFchmodat2 = true

// RemoveStale removes the socket file at path when nothing listens on it,
// as Listen replaces a stale one: under the same lock on its directory, so
// that it cannot remove the fresh socket of a Listen running meanwhile
// (which binds between its own check and listen). A missing path or
// directory is not an error; a live socket gives ErrInUse and is left in
// place; anything but a socket gives ErrNotSocket and is left in place.
func RemoveStale(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	unlock, err := lockDir(filepath.Dir(path))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	return clearStale(path)
}

// clearStale prepares path for bind: nothing there is fine, a stale socket
// is removed, anything else is refused.
func clearStale(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return errors.Wrapf(err, "stat socket path %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.Wrapf(ErrNotSocket, "socket path %s is %s", path, kind(st.Mode))
	}
	alive, err := Alive(path)
	if err != nil {
		return err
	}
	if alive {
		return errors.Wrapf(ErrInUse, "socket path %s: another process is listening", path)
	}
	return Remove(path)
}

// bindListen creates, binds and listens on the socket with no window where
// the file is more open than mode.
func bindListen(path string, mode uint32) (_ *net.UnixListener, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "socket for %s", path)
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	// unix_bind creates the file with the socket inode's mode minus the
	// umask, so this sets the upper bound before the file exists.
	if err := unix.Fchmod(fd, mode); err != nil {
		return nil, errors.Wrapf(err, "fchmod socket for %s", path)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if err == unix.EADDRINUSE {
			// Someone bound the path between our check and bind.
			return nil, errors.Wrapf(ErrInUse, "bind %s: %v", path, err)
		}
		return nil, errors.Wrapf(err, "bind %s", path)
	}
	defer func() {
		if err != nil {
			_ = Remove(path)
		}
	}()
	if afterBind != nil {
		afterBind(path)
	}
	if err := raiseMode(path, mode); err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return nil, errors.Wrapf(err, "listen %s", path)
	}
	f := os.NewFile(uintptr(fd), path)
	fd = -1 // f owns it now
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, errors.Wrapf(err, "listener for %s", path)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.Errorf("listener for %s is a %T, not a unix listener", path, l)
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// raiseMode sets the freshly bound socket file to exactly mode when the
// umask removed bits. It opens the file with O_PATH|O_NOFOLLOW and checks it
// is a socket, so it never changes the mode of something else.
func raiseMode(path string, mode uint32) error {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Wrapf(err, "open bound socket %s", path)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return errors.Wrapf(err, "stat bound socket %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.Wrapf(ErrNotSocket, "bound socket %s was replaced by %s", path, kind(st.Mode))
	}
	if st.Mode&0o7777 == mode {
		return nil
	}
	if err := chmodFD(pfd, mode); err != nil {
		return errors.Wrapf(err, "chmod socket %s to %#o", path, mode)
	}
	return nil
}

// ListenerFile returns a duplicate of l's fd as an *os.File for
// exec.Cmd.ExtraFiles. The parent closes both the file and l after
// cmd.Start; the socket file stays (see Listen).
//
// The duplicate shares l's open file description, which ListenerFile puts in
// blocking mode: a daemon written in C expects a blocking listening fd, and
// Go's net.FileListener in the child sets non-blocking mode again itself. As
// a consequence the parent must not Accept on l after calling ListenerFile.
func ListenerFile(l *net.UnixListener) (*os.File, error) {
	if l == nil {
		return nil, errors.New("listener file: nil listener")
	}
	f, err := l.File()
	if err != nil {
		return nil, errors.Wrapf(err, "dup listener %s", l.Addr())
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, errors.Wrapf(err, "set listener %s blocking", l.Addr())
	}
	return f, nil
}

// Remove deletes the socket file at path. A missing path (or a missing
// directory) is not an error. It never follows a symlink in the last
// component and refuses, with ErrNotSocket, to remove anything that is not a
// socket.
//
// The check and the unlink are made relative to one directory fd, so a swap
// of a parent directory in between cannot redirect the unlink; a swap of the
// entry itself between fstatat and unlinkat needs write access to that
// directory, which Listen creates 0700.
func Remove(path string) error {
	if path == "" {
		return errors.New("remove socket: empty path")
	}
	dir, name := filepath.Split(filepath.Clean(path))
	if dir == "" {
		dir = "."
	}
	if name == "" || name == "." || name == ".." || name == "/" {
		return errors.Wrapf(ErrNotSocket, "remove socket %s: not a file name", path)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return errors.Wrapf(err, "remove socket %s: open directory", path)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return errors.Wrapf(err, "remove socket %s: stat", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.Wrapf(ErrNotSocket, "remove socket %s: it is %s", path, kind(st.Mode))
	}
	err = unix.Unlinkat(dfd, name, 0)
	if err != nil && err != unix.ENOENT {
		return errors.Wrapf(err, "remove socket %s", path)
	}
	return nil
}

// FromFD rebuilds a listener from an fd inherited from the launcher (the
// child side of ListenerFile). It checks that fd is a unix stream socket in
// listening state (SO_ACCEPTCONN) and fails with ErrNotListener otherwise.
// name labels the fd in errors (for example "fd 3").
//
// FromFD takes ownership of fd on success: the listener holds a
// close-on-exec duplicate and fd itself is closed. On failure fd is left
// untouched.
func FromFD(fd uintptr, name string) (*net.UnixListener, error) {
	if fd > uintptr(^uint32(0)>>1) {
		return nil, errors.Errorf("listener %s: fd %d out of range", name, fd)
	}
	ifd := int(fd)
	domain, err := unix.GetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err == unix.ENOTSOCK {
		return nil, errors.Wrapf(ErrNotListener, "listener %s (fd %d) is not a socket", name, fd)
	}
	if err != nil {
		return nil, errors.Wrapf(err, "listener %s (fd %d)", name, fd)
	}
	if domain != unix.AF_UNIX {
		return nil, errors.Wrapf(ErrNotListener, "listener %s (fd %d) is in address family %d, not AF_UNIX", name, fd, domain)
	}
	typ, err := unix.GetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, errors.Wrapf(err, "listener %s (fd %d): SO_TYPE", name, fd)
	}
	if typ != unix.SOCK_STREAM {
		return nil, errors.Wrapf(ErrNotListener, "listener %s (fd %d) has socket type %d, not SOCK_STREAM", name, fd, typ)
	}
	acc, err := unix.GetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, errors.Wrapf(err, "listener %s (fd %d): SO_ACCEPTCONN", name, fd)
	}
	if acc == 0 {
		return nil, errors.Wrapf(ErrNotListener, "listener %s (fd %d) is not listening", name, fd)
	}
	// Work on a duplicate so that fd stays untouched when anything fails.
	dup, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "listener %s (fd %d): dup", name, fd)
	}
	f := os.NewFile(uintptr(dup), name)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, errors.Wrapf(err, "listener %s (fd %d)", name, fd)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.Wrapf(ErrNotListener, "listener %s (fd %d) is a %T", name, fd, l)
	}
	ul.SetUnlinkOnClose(false)
	if err := unix.Close(ifd); err != nil {
		ul.Close()
		return nil, errors.Wrapf(err, "listener %s: close fd %d", name, fd)
	}
	return ul, nil
}

// kind names a file type for error messages.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "of unknown type"
}
