// Package hostfs is fsd's attach point: a p9.File tree over one host
// directory (an export), served to an untrusted guest. It is modelled on
// gVisor's gofer (fsgofer) and is the security boundary of the daemon.
//
// # Pinned fds, never path strings
//
// Every File holds a host fd pinned to one inode: an O_PATH fd for walked
// files (created files keep the fd their O_CREAT open returned; a clone
// shares its source's fd, reference counted, and an open File adds the fd
// Open made).
// Walk resolves one component at a time relative to the parent's fd with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) and
// O_NOFOLLOW (plain openat with O_NOFOLLOW where openat2 is missing), after
// rejecting "", ".", "..", and names containing '/' or NUL. No operation
// ever resolves a path string from the export root, so neither a symlink
// nor a rename race on the host can lead outside the export: a swapped-in
// symlink is opened as a symlink (and walking through it fails with
// ENOTDIR), and a renamed directory keeps being the directory it was.
//
// # Host fds per fid
//
// A fid costs one host fd, the O_PATH fd that pins its inode, plus one
// while it is open (Open reopens the inode; a created file's O_CREAT fd
// serves as both, so it costs one). A clone (an empty walk) shares its
// source's fd and costs none. To be able to remove or rename itself, a
// File also holds a reference on its parent directory's node: after a
// one-name walk, which is what Linux's v9fs sends, that is the walking
// fid's own node, so no fd is added; after a walk through n > 1 names it
// is the intermediate directory the walk passed last, whose fd stays open
// as long as the File does (2 fds per such fid, 3 when open). hostfs never
// re-derives a parent through "..", so that fd is the price of Remove and
// Rename on fids walked through several names. The export root's own fd
// is held by the FS and every File attached to it.
//
// # Cost per operation
//
// The hot paths allocate little: a one-name walk or a create is one
// allocation (the File, with its node, open state and the walk's QID
// inside), a clone one smaller one, an open of a regular file none,
// getattr and a failed lookup none, and a Readdir call two whatever the
// number of entries (the Dirents and one string holding every name).
// Names reach the kernel through a NUL-terminated buffer on the stack and
// raw system calls, not
// golang.org/x/sys/unix's allocating wrappers. A walk step is one
// openat2 (or openat) and one fstat; a create is one openat and one
// fstat, plus an fchown only when the guest's ids are not the ones the
// new inode already has and a chmod only when the umask or a chown
// changed its mode bits. A Readdir call reads host entries into pooled
// scratch space that it gives back when it returns: an open directory
// keeps no buffer between calls, however many a guest holds partly read;
// a call that got more entries than its budget holds puts the directory's
// host position back with one lseek. TestAllocations and
// TestSyscallCounts hold these figures.
//
// Operations on the pinned inode use the *at system calls with an empty
// path (fchownat, utimensat, linkat, readlinkat: AT_EMPTY_PATH) or, for
// regular files and directories only, the process's /proc/self/fd entry for
// the fd (open for I/O, chmod, truncate, xattrs), reached through a handle
// on /proc/self/fd opened once before the daemon's sandbox hides /proc.
// Operations on a symlink File act on the link itself, never its target.
// Device nodes, sockets and FIFOs are never opened (Open answers ENXIO, as
// QEMU's 9p server does since CVE-2023-2861), so opening one never hangs,
// and Mknod creates only regular files and FIFOs. The mode and owner of a
// device node already in the export never change either (SetAttr answers
// EPERM): a guest's chmod 0666 would open it to host users.
//
// A new file, directory, FIFO or symlink gets the guest's owner and mode
// only once hostfs holds it pinned and knows it is the inode it made:
// Create and Mknod of a regular file pin it with the open that creates it
// (O_CREAT|O_EXCL|O_NOFOLLOW); Mkdir, Mknod of a FIFO and Symlink look the
// new name up once and check that it is still their new inode (of the
// type made, owned by the daemon's euid, and as fresh as a new one: a
// FIFO with one link and no data, a directory with no entries, a symlink
// to the target just written), and otherwise leave whatever a host user
// renamed there untouched (ESTALE). A new directory is made 0700 and given
// its mode after that check. Tgetlock never tells the guest the pid of a
// lock's holder, which may be a host process.
//
// # Contract with the server
//
// Methods return linux.Errno values (or io.EOF from ReadAt), mapped from
// host errors by one table (errno.go). Every method is safe for concurrent
// use: the host kernel orders operations on the fds, Readdir has a mutex
// per open directory, and Close waits for nothing but makes every later
// call fail with EBADF; the fds are released when the last in-flight call
// on the File returns, so a racing Close can never make a call use a
// closed (and possibly reused) fd number. What a method returns (Walk's
// QIDs, Readdir's Dirents and their names) is the caller's to keep for as
// long as it likes: hostfs never writes it again (a one-name walk's QID
// slice lives inside the new File; Dirents are allocated per call, never
// pooled). Beyond p9.File, a File has Remove() and GetLock(...) (see
// ARCHITECTURE.md "Attach point ↔ server").
//
// Modes are applied exactly as the guest asks: setuid, setgid and sticky
// bits are kept, the process umask is corrected for, and ownership is
// given (when the daemon runs as root) before the mode is restored, since
// chown clears setuid/setgid. A ReadOnly export answers EROFS to every
// mutation, opening for write and truncation included.
//
// # Setuid files and who may reach the export
//
// A daemon running as root keeps CAP_FSETID, so guest root can create
// files owned by root with mode 04755, as QEMU's passthrough and
// virtiofsd allow: a host user who can reach the export could run them as
// root on the host. The shared directory must therefore not be reachable
// by unprivileged host users (Kata keeps it under a 0700 directory)
// unless the FS is made with NoSetuid, which strips setuid and setgid from
// every mode the guest gives (setgid kept on directories, where it only
// passes the group on).
package hostfs

import (
	"io"
	"math"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// FS is one export: the p9.Attacher for a host directory tree.
type FS struct {
	root     *node
	readOnly bool
	log      *logrus.Entry

	// chown is true when the daemon runs as root and so can give new
	// files the guest's uid and gid.
	chown bool
	// euid is the daemon's effective uid, the owner of every inode it
	// creates.
	euid uint32

	// noSetuid strips setuid and setgid from the modes the guest sets
	// (NoSetuid).
	noSetuid bool

	// rootFD, when set (WithRootFD), is the export root New serves
	// instead of opening the root path.
	rootFD    int
	hasRootFD bool

	// Test knobs that force the fallbacks a newer kernel makes unneeded.
	noOpenat2   bool
	noXattrat   bool
	noEmptyPath bool

	devs devices

	// mu guards closed, so that Attach never takes a reference on a root
	// Close has released.
	mu     sync.Mutex
	closed bool
}

var _ p9.Attacher = (*FS)(nil)

// Option configures New.
type Option func(*FS)

// ReadOnly makes the export read-only: every mutation answers EROFS.
func ReadOnly() Option {
	return func(fs *FS) { fs.readOnly = true }
}

// NoSetuid strips the setuid and setgid bits from every mode the guest
// gives (Tlcreate, Tmkdir, Tmknod, Tsetattr), so that no file in the export
// can become a setuid or setgid program for the host. A directory keeps
// setgid, which only makes new entries inherit its group. Without it
// modes are kept exactly, as QEMU's passthrough and virtiofsd keep them.
func NoSetuid() Option {
	return func(fs *FS) { fs.noSetuid = true }
}

// WithLogger sets the logger; the default discards everything. hostfs
// adds the fields subsystem=hostfs and export=<root>.
func WithLogger(l *logrus.Entry) Option {
	return func(fs *FS) {
		if l != nil {
			fs.log = l
		}
	}
}

// WithRootFD makes New serve the directory fd refers to instead of opening
// the root path, which then only names the export in logs and errors. The
// daemon's sandbox uses it to serve an extra export through a detached
// clone of its mount tree (sandbox.Sandbox.OpenExport), which no path
// names. fd may be an O_PATH descriptor. New takes ownership of fd: it
// closes it when it fails, and the FS closes it once its root is released.
func WithRootFD(fd int) Option {
	return func(fs *FS) { fs.rootFD, fs.hasRootFD = fd, true }
}

// quietLogger discards everything; it is the default logger.
func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// New opens root (O_PATH|O_DIRECTORY), or takes the fd WithRootFD gives,
// and returns the FS that serves it. It also opens the process-wide
// /proc/self/fd handle on first use, so New must run before the daemon's
// sandbox hides /proc. root is trusted (it comes from the daemon's
// configuration): symlinks in it are followed once, here.
func New(root string, opts ...Option) (*FS, error) {
	euid := unix.Geteuid()
	fs := &FS{log: quietLogger(), chown: euid == 0, euid: uint32(euid)}
	for _, o := range opts {
		o(fs)
	}
	fs.log = fs.log.WithFields(logrus.Fields{"subsystem": "hostfs", "export": root})
	fd, err := fs.openRoot(root)
	if err != nil {
		return nil, err
	}
	if err := openProcSelfFD(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, errors.Wrapf(err, "stat export root %q", root)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return nil, errors.Wrapf(unix.ENOTDIR, "export root %q", root)
	}
	fs.devs.init(st.Dev)
	qid, err := fs.qid(&st)
	if err != nil {
		unix.Close(fd)
		return nil, errors.Wrapf(err, "qid of export root %q", root)
	}
	fs.root = newNode(fd, &st, qid)
	return fs, nil
}

// openRoot returns the export root's fd: the one WithRootFD gave, or root
// opened O_PATH|O_DIRECTORY.
func (fs *FS) openRoot(root string) (int, error) {
	if fs.hasRootFD {
		if fs.rootFD < 0 {
			return -1, errors.Wrapf(unix.EBADF, "export root %q: fd %d", root, fs.rootFD)
		}
		return fs.rootFD, nil
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, errors.Wrapf(err, "open export root %q", root)
	}
	return fd, nil
}

// Attach implements p9.Attacher.Attach: a new File for the export root.
func (fs *FS) Attach() (p9.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return nil, linux.EBADF
	}
	fs.root.incRef()
	return fs.newFile(fs.root, nil, ""), nil
}

// Close releases the FS's own reference to the export root. Files already
// attached keep working until they are closed; Attach fails afterwards.
func (fs *FS) Close() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return nil
	}
	fs.closed = true
	fs.root.decRef()
	return nil
}

// devices gives each host device found inside the export a small index, so
// QID paths of files on different devices never collide (gVisor's gofer
// does the same): the export root's device is index 0 and its inode
// numbers are used unchanged; devices met later get 1..254 in the top 8
// bits of the path. An inode number that does not fit in 56 bits, or a
// 256th device, gets a path from a counter in the reserved index 255,
// remembered per (device, inode) so it stays stable.
type devices struct {
	rootDev uint64

	mu          sync.RWMutex
	index       map[uint64]uint64 // device -> index (1..254)
	overflow    map[devIno]uint64 // (device, inode) -> path in index 255
	overflowMax int
}

type devIno struct{ dev, ino uint64 }

const (
	inoBits       = 56
	inoMask       = 1<<inoBits - 1
	overflowIndex = 255
	// maxOverflow bounds the overflow map. Only inodes the host creates
	// can land there (the guest cannot create devices or choose inode
	// numbers), so it is a guard, not a limit anyone should meet.
	maxOverflow = 1 << 22
)

func (d *devices) init(rootDev uint64) {
	d.rootDev = rootDev
	d.index = make(map[uint64]uint64)
	d.overflow = make(map[devIno]uint64)
	d.overflowMax = maxOverflow
}

// path returns the QID path of inode ino on device dev.
func (d *devices) path(dev, ino uint64) (uint64, error) {
	if ino&^inoMask == 0 {
		if dev == d.rootDev {
			return ino, nil
		}
		d.mu.RLock()
		idx, ok := d.index[dev]
		d.mu.RUnlock()
		if ok {
			return idx<<inoBits | ino, nil
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if idx, ok := d.index[dev]; ok {
			return idx<<inoBits | ino, nil
		}
		if n := uint64(len(d.index)) + 1; n < overflowIndex {
			d.index[dev] = n
			return n<<inoBits | ino, nil
		}
	} else {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	// Overflow: d.mu is held for writing here.
	key := devIno{dev, ino}
	if p, ok := d.overflow[key]; ok {
		return p, nil
	}
	if len(d.overflow) >= d.overflowMax {
		return 0, linux.EOVERFLOW
	}
	p := uint64(overflowIndex)<<inoBits | uint64(len(d.overflow)+1)
	d.overflow[key] = p
	return p, nil
}

// qid returns the QID of the inode st describes. The version is always 0:
// Linux's v9fs compares qid.version when it looks an inode up again, so a
// version that moved with mtime (as QEMU's does) would make the guest see
// a different inode after every write and break hard links and open files;
// the guest's caches are kept coherent by getattr, not by the version.
func (fs *FS) qid(st *unix.Stat_t) (p9.QID, error) {
	path, err := fs.devs.path(st.Dev, st.Ino)
	if err != nil {
		return p9.QID{}, err
	}
	return p9.QID{Type: p9.FileMode(st.Mode).QIDType(), Path: path}, nil
}

// attrFromStat converts a host stat into the 9P attributes, all of them
// (p9.StatToAttr is not used: it fills RDev from st.Dev).
func attrFromStat(st *unix.Stat_t) (p9.AttrMask, p9.Attr) {
	valid := p9.AttrMask{
		Mode: true, NLink: true, UID: true, GID: true, RDev: true,
		ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true,
	}
	return valid, p9.Attr{
		Mode:             p9.FileMode(st.Mode),
		UID:              p9.UID(st.Uid),
		GID:              p9.GID(st.Gid),
		NLink:            p9.NLink(st.Nlink),
		RDev:             p9.Dev(st.Rdev),
		Size:             uint64(st.Size),
		BlockSize:        uint64(st.Blksize),
		Blocks:           uint64(st.Blocks),
		ATimeSeconds:     uint64(st.Atim.Sec),
		ATimeNanoSeconds: uint64(st.Atim.Nsec),
		MTimeSeconds:     uint64(st.Mtim.Sec),
		MTimeNanoSeconds: uint64(st.Mtim.Nsec),
		CTimeSeconds:     uint64(st.Ctim.Sec),
		CTimeNanoSeconds: uint64(st.Ctim.Nsec),
	}
}

// fstat stats fd, retrying EINTR.
func fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err != unix.EINTR {
			return err
		}
	}
}

// maxInt64 bounds offsets and sizes that arrive as uint64.
const maxInt64 = math.MaxInt64
