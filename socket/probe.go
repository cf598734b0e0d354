package socket

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// How the probes find listeners, best first:
//
//  1. sock_diag (NETLINK_SOCK_DIAG, the interface `ss -xl` uses) lists the
//     listening unix sockets with the device and inode of the file each one
//     is bound to. A listener counts only when that identity equals the
//     socket file now at the path, so a socket file that was unlinked and
//     replaced is told apart from the one the listener still holds.
//  2. /proc/net/unix lists listening sockets (flag __SO_ACCEPTCON) by the
//     path string given to bind(2). Used when sock_diag is unavailable (no
//     unix_diag module). It cannot tell a replaced file from the original.
//  3. A connect(2) probe, only when neither can be read (no procfs).
//
// Neither of the first two ever connects. That matters: a vhost-user daemon
// such as QEMU's virtiofsd serves exactly one connection and exits when that
// connection closes, so probing it with a connection would kill the daemon
// the probe was meant to find alive.
//
// Both tables are per network namespace: a listener in another network
// namespace is not seen (the connect probe would see it).

// Test hooks: which sources the probes may use.
var (
	useSockDiag  = true
	procNetUnix  = "/proc/net/unix"
	connectProbe = connectAlive
)

// errNoSource means no listener table could be read.
var errNoSource = errors.New("neither sock_diag nor /proc/net/unix is readable")

// listener is one listening unix socket as the kernel reports it.
type listener struct {
	ino    uint64 // sockfs inode: /proc/PID/fd/N links to "socket:[ino]"
	path   string // the path given to bind(2), as the kernel recorded it
	hasVFS bool   // vfsDev/vfsIno are known (sock_diag)
	vfsDev uint32 // device of the bound file, kernel encoding (major<<20|minor)
	vfsIno uint32 // inode of the bound file, low 32 bits
}

// Alive reports whether a listener is bound to the socket file at path. It
// does not connect when the kernel's socket tables can be read (see the
// comment above). A missing path is not alive; a path that is not a socket
// gives false and an error wrapping ErrNotSocket.
func Alive(path string) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, errors.Wrapf(err, "probe socket %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false, errors.Wrapf(ErrNotSocket, "probe socket %s: it is %s", path, kind(st.Mode))
	}
	ls, err := listenersAt(path, &st)
	if errors.Is(err, errNoSource) {
		return connectProbe(path)
	}
	if err != nil {
		return false, err
	}
	return len(ls) > 0, nil
}

// Stale reports whether path is a socket file nothing listens on, such as
// one left by a crashed run; Listen would replace it. A caller that wants
// to log the replacement asks before calling Listen (which logs nothing).
func Stale(path string) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, errors.Wrapf(err, "stat socket %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false, nil
	}
	alive, err := Alive(path)
	if err != nil {
		return false, err
	}
	return !alive, nil
}

// ListenerInode returns the sockfs inode of the listening socket bound to
// the socket file at path: the N in the "socket:[N]" link that
// /proc/PID/fd/* shows for a process holding it. It fails with
// ErrNoListener when nothing listens there.
func ListenerInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if err == unix.ENOENT {
			return 0, errors.Wrapf(ErrNoListener, "socket %s does not exist", path)
		}
		return 0, errors.Wrapf(err, "stat socket %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, errors.Wrapf(ErrNotSocket, "socket %s: it is %s", path, kind(st.Mode))
	}
	ls, err := listenersAt(path, &st)
	if err != nil {
		return 0, err
	}
	switch len(ls) {
	case 0:
		return 0, errors.Wrapf(ErrNoListener, "socket %s", path)
	case 1:
		return ls[0].ino, nil
	}
	// Only /proc/net/unix can yield several: sockets bound at the same path
	// string, all but one to files that were since unlinked.
	return 0, errors.Errorf("socket %s: %d listeners are bound at this path, cannot tell which owns the file", path, len(ls))
}

// HeldBy reports whether process pid has an fd open on the listening socket
// bound to the socket file at path. A process that does not exist holds
// nothing (false, nil); so does every process when nothing listens at path.
// Reading another user's /proc/PID/fd needs privilege (an EACCES error).
func HeldBy(pid int, path string) (bool, error) {
	if pid <= 0 {
		return false, errors.Errorf("held by: invalid pid %d", pid)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if err == unix.ENOENT {
			return false, nil
		}
		return false, errors.Wrapf(err, "stat socket %s", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false, errors.Wrapf(ErrNotSocket, "socket %s: it is %s", path, kind(st.Mode))
	}
	ls, err := listenersAt(path, &st)
	if err != nil {
		return false, err
	}
	if len(ls) == 0 {
		return false, nil
	}
	want := make(map[string]bool, len(ls))
	for _, l := range ls {
		want["socket:["+strconv.FormatUint(l.ino, 10)+"]"] = true
	}
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	d, err := os.Open(fdDir)
	if err != nil {
		if os.IsNotExist(err) {
			return false, nil
		}
		return false, errors.Wrapf(err, "held by: open %s", fdDir)
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			target, lerr := os.Readlink(fdDir + "/" + n)
			if lerr != nil {
				continue // the fd was closed meanwhile
			}
			if want[target] {
				return true, nil
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) {
				return false, nil // the process exited while we read
			}
			return false, errors.Wrapf(err, "held by: read %s", fdDir)
		}
	}
}

// listenersAt returns the listeners bound to the socket file at path, whose
// lstat is st. It returns errNoSource when no table can be read.
//
// With sock_diag, a listener whose bound file has st's device and inode is a
// certain match, and then only certain matches count. Without one, a
// listener bound at the same path string still counts unless it is known to
// hold a different file on the same device (the file was replaced): a
// filesystem that reports a different device to stat than to the socket
// layer must not make a live socket look stale, since Listen would then
// replace it. Erring towards "alive" only costs a refusal to start.
func listenersAt(path string, st *unix.Stat_t) ([]listener, error) {
	names := map[string]bool{path: true}
	if abs, err := filepath.Abs(path); err == nil {
		names[abs] = true
	}
	if useSockDiag {
		if all, err := diagListeners(); err == nil {
			return matchListeners(all, names, uint32(unix.Major(st.Dev)<<20|unix.Minor(st.Dev)), uint32(st.Ino)), nil
		}
	}
	all, err := procListeners(procNetUnix)
	if err != nil {
		return nil, errors.Wrapf(errNoSource, "probe socket %s: %v", path, err)
	}
	return matchListeners(all, names, 0, 0), nil
}

// matchListeners applies listenersAt's rule; dev and ino are the socket
// file's identity in the kernel's encoding.
func matchListeners(all []listener, names map[string]bool, dev, ino uint32) []listener {
	var certain, possible []listener
	for _, l := range all {
		switch {
		case l.hasVFS && l.vfsDev == dev && l.vfsIno == ino:
			certain = append(certain, l)
		case !names[l.path]:
		case l.hasVFS && l.vfsDev == dev:
			// Same path, same filesystem, other inode: it holds a file
			// that was unlinked and replaced by the one at path now.
		default:
			possible = append(possible, l)
		}
	}
	if len(certain) > 0 {
		return certain
	}
	return possible
}

// sock_diag constants from linux/unix_diag.h and linux/sock_diag.h.
const (
	udiagShowName = 0x1
	udiagShowVFS  = 0x2
	unixDiagName  = 0
	unixDiagVFS   = 1
	tcpListen     = 10 // the state unix_diag reports for listening sockets

	sizeofUnixDiagReq = 24
	sizeofUnixDiagMsg = 16
)

// diagListeners dumps the listening unix sockets of this network namespace
// through NETLINK_SOCK_DIAG.
func diagListeners() ([]listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, errors.Wrap(err, "sock_diag socket")
	}
	defer unix.Close(fd)
	// struct nlmsghdr followed by struct unix_diag_req.
	req := make([]byte, unix.SizeofNlMsghdr+sizeofUnixDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence number
	r := req[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_UNIX                              // sdiag_family
	ne.PutUint32(r[4:], 1<<tcpListen)                // udiag_states
	ne.PutUint32(r[12:], udiagShowName|udiagShowVFS) // udiag_show
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, errors.Wrap(err, "sock_diag request")
	}
	var out []listener
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, errors.Wrap(err, "sock_diag reply")
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, errors.Wrap(err, "sock_diag reply")
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return nil, errors.Wrap(syscall.Errno(-e), "sock_diag")
					}
				}
				return nil, errors.New("sock_diag: error reply")
			case unix.SOCK_DIAG_BY_FAMILY:
				if l, ok := parseDiagMsg(m.Data); ok {
					out = append(out, l)
				}
			}
		}
	}
}

// parseDiagMsg decodes one struct unix_diag_msg and its attributes.
func parseDiagMsg(b []byte) (listener, bool) {
	if len(b) < sizeofUnixDiagMsg {
		return listener{}, false
	}
	ne := binary.NativeEndian
	l := listener{ino: uint64(ne.Uint32(b[4:]))}
	for a := b[sizeofUnixDiagMsg:]; len(a) >= 4; {
		alen := int(ne.Uint16(a[0:]))
		atype := ne.Uint16(a[2:]) & 0x3fff // drop NLA_F_NESTED / NLA_F_NET_BYTEORDER
		if alen < 4 || alen > len(a) {
			break
		}
		val := a[4:alen]
		switch atype {
		case unixDiagName:
			// Pathname sockets carry the path plus a NUL; abstract ones
			// start with a NUL and never match a file.
			if i := strings.IndexByte(string(val), 0); i >= 0 {
				val = val[:i]
			}
			l.path = string(val)
		case unixDiagVFS:
			if len(val) >= 8 {
				l.hasVFS = true
				l.vfsIno = ne.Uint32(val[0:])
				l.vfsDev = ne.Uint32(val[4:])
			}
		}
		step := (alen + 3) &^ 3
		if step > len(a) {
			break
		}
		a = a[step:]
	}
	return l, true
}

// procListeners parses /proc/net/unix and returns the listening sockets
// bound to a path.
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	ffff8881...: 00000002 00000000 00010000 0001 01 33941 /run/x.sock
func procListeners(file string) ([]listener, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const acceptCon = 0x10000 // __SO_ACCEPTCON: the socket is listening
	var out []listener
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 64<<10)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		fields, path := splitProcUnix(sc.Text())
		if path == "" || strings.HasPrefix(path, "@") {
			continue // unbound or abstract
		}
		flags, err := strconv.ParseUint(fields[3], 16, 32)
		if err != nil || flags&acceptCon == 0 {
			continue
		}
		ino, err := strconv.ParseUint(fields[6], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, listener{ino: ino, path: path})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// splitProcUnix splits a /proc/net/unix line into its seven fixed columns
// and the path, which is the rest of the line after one space (it may
// contain spaces itself). path is "" when the socket has no name.
func splitProcUnix(line string) (fields [7]string, path string) {
	rest := line
	for i := range fields {
		rest = strings.TrimLeft(rest, " ")
		end := strings.IndexByte(rest, ' ')
		if end < 0 {
			if i < len(fields)-1 {
				return fields, ""
			}
			fields[i] = rest
			return fields, ""
		}
		fields[i], rest = rest[:end], rest[end+1:]
	}
	return fields, rest
}

// connectAlive is the last resort: connect and hang up. A refused
// connection means nothing listens; a full backlog (EAGAIN) means something
// does.
func connectAlive(path string) (bool, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return true, nil
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return false, nil
	case errors.Is(err, syscall.EAGAIN):
		return true, nil
	}
	return false, errors.Wrapf(err, "probe socket %s by connecting", path)
}
