package bench

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strconv"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Workload identifiers (results.json keys).
const (
	WGetattr  = "getattr"
	WGetattr8 = "getattr8"
	WWalk     = "walk"
	WCreate   = "create"
	WReaddir  = "readdir"
	WRead     = "read"
	WWrite    = "write"
)

// Names in the export tree every target serves (see prepareExport).
const (
	nameFile    = "file"    // small file: getattr, walk
	nameDir     = "dir10k"  // Params.DirEntries empty files
	nameBig     = "big"     // Params.FileSize bytes, read
	nameWrite   = "wbig"    // written, truncated before each pass
	nameCreates = "creates" // create+close+unlink happen here
)

// Frame sizes of the getattr exchange, which the floor reproduces.
const (
	tgetattrSize = frameHeaderLen + 4 + 8 // fid, request mask
	rgetattrSize = 160                    // valid, qid, the full attribute block
	msgTgetattr  = 24
)

// getattrMask is what Linux's v9fs asks for (P9_STATS_BASIC).
var getattrMask = p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true,
	ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true}

// ErrShort is returned when a server moves fewer bytes or entries than a
// workload asked for.
var ErrShort = errors.New("short transfer")

// ErrUnsupported marks a workload a server cannot run (it answered ENOSYS
// or EOPNOTSUPP to every way of doing it).
var ErrUnsupported = errors.New("not supported by this server")

// runner is one client's side of a workload: op does one operation and
// returns the units it accounts for (operations, MB or entries); prep, when
// set, runs untimed before each op.
type runner struct {
	prep  func() error
	op    func() (float64, error)
	close func() error
	note  string
}

func (r *runner) Close() error {
	if r == nil || r.close == nil {
		return nil
	}
	return r.close()
}

// workload describes one measurement and how each kind of target runs it;
// a nil constructor means the kind does not take part.
type workload struct {
	id    string
	title string
	unit  string
	conns int
	nine  func(e *nineEnv) (*runner, error)
	host  func(e *hostEnv) (*runner, error)
	floor func(e *floorEnv) (*runner, error)
}

// nineEnv is what a 9P workload runner gets: its own session.
type nineEnv struct {
	ctx    context.Context
	s      *session
	msize  uint32
	p      Params
	export string // host path of the export (for untimed preparation)
	prefix string // unique per runner, for names it creates
}

// hostEnv is what a host (ceiling) runner gets.
type hostEnv struct {
	p      Params
	export string
	prefix string
}

// floorEnv is what an echo (floor) runner gets.
type floorEnv struct {
	ctx    context.Context
	socket string
}

// workloads returns the workloads in report order.
func workloads() []workload {
	return []workload{
		{id: WGetattr, title: "getattr on an open fid", unit: "ops/s", conns: 1,
			nine: nineGetattr, host: hostGetattr, floor: floorGetattr},
		{id: WGetattr8, title: "getattr, 8 connections at once", unit: "ops/s", conns: 8,
			nine: nineGetattr, host: hostGetattr, floor: floorGetattr},
		{id: WWalk, title: "walk+clunk", unit: "ops/s", conns: 1,
			nine: nineWalk, host: hostWalk},
		{id: WCreate, title: "create+close+unlink", unit: "ops/s", conns: 1,
			nine: nineCreate, host: hostCreate},
		{id: WReaddir, title: "readdir of a large directory", unit: "entries/s", conns: 1,
			nine: nineReaddir, host: hostReaddir},
		{id: WRead, title: "sequential read", unit: "MB/s", conns: 1,
			nine: nineRead, host: hostRead},
		{id: WWrite, title: "sequential write", unit: "MB/s", conns: 1,
			nine: nineWrite, host: hostWrite},
	}
}

// ioChunk is the payload of one Tread/Twrite at msize: the largest 4 KiB
// multiple that fits with room for p9's headers, at most 1 MiB.
func ioChunk(msize uint32) int {
	c := (int(msize) - 4096) &^ 4095
	if c > 1<<20 {
		c = 1 << 20
	}
	return c
}

// readdirCount is the Treaddir count at msize: what Linux's v9fs asks for
// (msize - P9_READDIRHDRSZ, 24); diod answers EIO to a count past that.
func readdirCount(msize uint32) uint32 { return msize - 24 }

func one() (float64, error) { return 1, nil }

// --- 9P runners ---

func nineGetattr(e *nineEnv) (*runner, error) {
	f, err := e.s.walkOpen(nameFile, p9.ReadOnly)
	if err != nil {
		return nil, err
	}
	return &runner{
		op: func() (float64, error) {
			_, _, _, err := f.GetAttr(getattrMask)
			return 1, err
		},
		close: f.Close,
	}, nil
}

func nineWalk(e *nineEnv) (*runner, error) {
	names := []string{nameFile}
	return &runner{op: func() (float64, error) {
		_, f, err := e.s.root.Walk(names)
		if err != nil {
			return 0, err
		}
		return 1, f.Close()
	}}, nil
}

// nineCreate creates a file with Tlcreate on a clone of the directory fid,
// clunks it and unlinks it with Tunlinkat, as Linux's v9fs does; a server
// without Tunlinkat (diod 1.0.24 answers EOPNOTSUPP) gets v9fs's fallback,
// Twalk to the name and Tremove.
func nineCreate(e *nineEnv) (*runner, error) {
	_, dir, err := e.s.root.Walk([]string{nameCreates})
	if err != nil {
		return nil, errors.Wrapf(err, "walk %s", nameCreates)
	}
	uid, gid := p9.UID(unix.Getuid()), p9.GID(unix.Getgid())
	create := func(name string) error {
		_, d, err := dir.Walk(nil)
		if err != nil {
			return errors.Wrap(err, "clone directory fid")
		}
		f, _, _, err := d.Create(name, p9.WriteOnly, 0o644, uid, gid)
		if err != nil {
			_ = d.Close()
			return errors.Wrapf(err, "create %s", name)
		}
		return errors.Wrapf(f.Close(), "clunk %s", name)
	}
	unlinkat := func(name string) error { return dir.UnlinkAt(name, 0) }
	remove := func(name string) error {
		_, f, err := dir.Walk([]string{name})
		if err != nil {
			return err
		}
		r, ok := f.(interface{ Remove() error })
		if !ok {
			_ = f.Close()
			return linux.ENOSYS
		}
		return r.Remove()
	}
	// Find out once which unlink the server takes.
	unlink, note := unlinkat, "Tunlinkat"
	probe := e.prefix + "probe"
	if err := create(probe); err != nil {
		_ = dir.Close()
		return nil, err
	}
	if err := unlinkat(probe); err != nil {
		if !isUnsupported(err) {
			_ = dir.Close()
			return nil, errors.Wrapf(err, "unlinkat %s", probe)
		}
		if rerr := remove(probe); rerr != nil {
			_ = dir.Close()
			if isUnsupported(rerr) {
				return nil, errors.Wrapf(ErrUnsupported, "unlink: Tunlinkat: %v; Tremove: %v", err, rerr)
			}
			return nil, errors.Wrapf(rerr, "remove %s", probe)
		}
		unlink, note = remove, "Twalk+Tremove (no Tunlinkat)"
	}
	name := []byte(e.prefix)
	base := len(name)
	var n int64
	return &runner{
		note: note,
		op: func() (float64, error) {
			n++
			name = strconv.AppendInt(name[:base], n, 10)
			s := string(name)
			if err := create(s); err != nil {
				return 0, err
			}
			return 1, errors.Wrapf(unlink(s), "unlink %s", s)
		},
		close: dir.Close,
	}, nil
}

func isUnsupported(err error) bool {
	return errors.Is(err, linux.EOPNOTSUPP) || errors.Is(err, linux.ENOSYS)
}

func nineReaddir(e *nineEnv) (*runner, error) {
	names := []string{nameDir}
	count := readdirCount(e.msize)
	want := e.p.DirEntries
	return &runner{op: func() (float64, error) {
		_, d, err := e.s.root.Walk(names)
		if err != nil {
			return 0, errors.Wrapf(err, "walk %s", nameDir)
		}
		defer d.Close()
		if _, _, err := d.Open(p9.ReadOnly); err != nil {
			return 0, errors.Wrapf(err, "open %s", nameDir)
		}
		var off uint64
		n := 0
		for {
			ents, err := d.Readdir(off, count)
			if err != nil {
				return float64(n), errors.Wrapf(err, "readdir %s at %d", nameDir, off)
			}
			if len(ents) == 0 {
				break
			}
			n += len(ents)
			off = ents[len(ents)-1].Offset
		}
		if n < want {
			return float64(n), errors.Wrapf(ErrShort, "readdir %s: %d entries, want at least %d", nameDir, n, want)
		}
		return float64(n), nil
	}}, nil
}

func nineRead(e *nineEnv) (*runner, error) {
	f, err := e.s.walkOpen(nameBig, p9.ReadOnly)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ioChunk(e.msize))
	size := e.p.FileSize
	return &runner{
		op: func() (float64, error) {
			for off := int64(0); off < size; {
				n, err := f.ReadAt(buf, off)
				if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
					return 0, errors.Wrapf(err, "read %s at %d", nameBig, off)
				}
				if n == 0 {
					return 0, errors.Wrapf(ErrShort, "read %s: EOF at %d of %d", nameBig, off, size)
				}
				off += int64(n)
			}
			return float64(size) / 1e6, nil
		},
		close: f.Close,
	}, nil
}

func nineWrite(e *nineEnv) (*runner, error) {
	f, err := e.s.walkOpen(nameWrite, p9.WriteOnly)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ioChunk(e.msize))
	fill(buf)
	size := e.p.FileSize
	path := filepath.Join(e.export, nameWrite)
	return &runner{
		prep: func() error { return errors.Wrapf(unix.Truncate(path, 0), "truncate %s", path) },
		op: func() (float64, error) {
			for off := int64(0); off < size; {
				chunk := buf
				if rest := size - off; rest < int64(len(chunk)) {
					chunk = chunk[:rest]
				}
				n, err := f.WriteAt(chunk, off)
				if err != nil {
					return 0, errors.Wrapf(err, "write %s at %d", nameWrite, off)
				}
				if n == 0 {
					return 0, errors.Wrapf(ErrShort, "write %s: 0 bytes at %d", nameWrite, off)
				}
				off += int64(n)
			}
			return float64(size) / 1e6, nil
		},
		close: f.Close,
	}, nil
}

// --- host (ceiling) runners: the same work with plain syscalls ---

func hostOpen(path string, flags int) (int, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	return fd, errors.Wrapf(err, "open %s", path)
}

func closer(fd int) func() error {
	return func() error { return errors.Wrap(unix.Close(fd), "close") }
}

func hostGetattr(e *hostEnv) (*runner, error) {
	fd, err := hostOpen(filepath.Join(e.export, nameFile), unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	return &runner{
		op:    func() (float64, error) { return 1, unix.Fstat(fd, &st) },
		close: closer(fd),
	}, nil
}

func hostWalk(e *hostEnv) (*runner, error) {
	root, err := hostOpen(e.export, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	return &runner{
		op: func() (float64, error) {
			fd, err := unix.Openat(root, nameFile, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return 0, errors.Wrapf(err, "openat %s", nameFile)
			}
			return 1, unix.Close(fd)
		},
		close: closer(root),
	}, nil
}

func hostCreate(e *hostEnv) (*runner, error) {
	dir, err := hostOpen(filepath.Join(e.export, nameCreates), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	name := []byte(e.prefix)
	base := len(name)
	var n int64
	return &runner{
		op: func() (float64, error) {
			n++
			name = strconv.AppendInt(name[:base], n, 10)
			s := string(name)
			fd, err := unix.Openat(dir, s, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return 0, errors.Wrapf(err, "create %s", s)
			}
			if err := unix.Close(fd); err != nil {
				return 0, errors.Wrapf(err, "close %s", s)
			}
			return 1, errors.Wrapf(unix.Unlinkat(dir, s, 0), "unlink %s", s)
		},
		close: closer(dir),
	}, nil
}

func hostReaddir(e *hostEnv) (*runner, error) {
	path := filepath.Join(e.export, nameDir)
	buf := make([]byte, readdirCount(1<<20))
	want := e.p.DirEntries
	return &runner{op: func() (float64, error) {
		fd, err := hostOpen(path, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		n := 0
		for {
			got, err := unix.Getdents(fd, buf)
			if err != nil {
				return float64(n), errors.Wrapf(err, "getdents %s", path)
			}
			if got == 0 {
				break
			}
			n += countDirents(buf[:got])
		}
		if n < want {
			return float64(n), errors.Wrapf(ErrShort, "getdents %s: %d entries, want at least %d", path, n, want)
		}
		return float64(n), nil
	}}, nil
}

// countDirents counts linux_dirent64 records (d_reclen at offset 16).
func countDirents(b []byte) int {
	n := 0
	for len(b) >= 19 {
		reclen := int(binary.LittleEndian.Uint16(b[16:18]))
		if reclen == 0 || reclen > len(b) {
			break
		}
		n++
		b = b[reclen:]
	}
	return n
}

func hostRead(e *hostEnv) (*runner, error) {
	fd, err := hostOpen(filepath.Join(e.export, nameBig), unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	size := e.p.FileSize
	return &runner{
		op: func() (float64, error) {
			for off := int64(0); off < size; {
				n, err := unix.Pread(fd, buf, off)
				if err != nil {
					return 0, errors.Wrapf(err, "pread %s at %d", nameBig, off)
				}
				if n == 0 {
					return 0, errors.Wrapf(ErrShort, "pread %s: EOF at %d", nameBig, off)
				}
				off += int64(n)
			}
			return float64(size) / 1e6, nil
		},
		close: closer(fd),
	}, nil
}

func hostWrite(e *hostEnv) (*runner, error) {
	fd, err := hostOpen(filepath.Join(e.export, nameWrite), unix.O_WRONLY)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	fill(buf)
	size := e.p.FileSize
	return &runner{
		prep: func() error { return errors.Wrap(unix.Ftruncate(fd, 0), "ftruncate") },
		op: func() (float64, error) {
			for off := int64(0); off < size; {
				chunk := buf
				if rest := size - off; rest < int64(len(chunk)) {
					chunk = chunk[:rest]
				}
				n, err := unix.Pwrite(fd, chunk, off)
				if err != nil {
					return 0, errors.Wrapf(err, "pwrite %s at %d", nameWrite, off)
				}
				off += int64(n)
			}
			return float64(size) / 1e6, nil
		},
		close: closer(fd),
	}, nil
}

// fill gives buf non-zero content (a server must not get away with holes).
func fill(buf []byte) {
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
}

// --- floor runners: a raw Tgetattr-sized frame out, an Rgetattr-sized
// frame back, over the same kind of socket ---

func floorGetattr(e *floorEnv) (*runner, error) {
	c, err := dialUnix(e.ctx, e.socket)
	if err != nil {
		return nil, err
	}
	return floorRunner(c), nil
}

func floorRunner(c net.Conn) *runner {
	req := make([]byte, tgetattrSize)
	binary.LittleEndian.PutUint32(req, tgetattrSize)
	req[4] = msgTgetattr
	binary.LittleEndian.PutUint16(req[5:], 1)
	reply := make([]byte, rgetattrSize)
	return &runner{
		op: func() (float64, error) {
			if _, err := c.Write(req); err != nil {
				return 0, errors.Wrap(err, "floor: write")
			}
			// Header, then body: the two reads p9's client makes.
			if _, err := io.ReadFull(c, reply[:frameHeaderLen]); err != nil {
				return 0, errors.Wrap(err, "floor: read header")
			}
			if _, err := io.ReadFull(c, reply[frameHeaderLen:]); err != nil {
				return 0, errors.Wrap(err, "floor: read body")
			}
			return 1, nil
		},
		close: c.Close,
	}
}
