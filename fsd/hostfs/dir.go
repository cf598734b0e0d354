package hostfs

import (
	"encoding/binary"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

const (
	// direntBufSize is the getdents64 buffer of an open directory: about
	// a thousand short names per system call.
	direntBufSize = 32 << 10
	// direntHeader is the fixed part of a 9P dirent: qid[13] offset[8]
	// type[1] name length[2]; the name follows.
	direntHeader = 24
	// maxReaddirCount bounds the byte budget of one Readdir whatever the
	// caller asks (4 MiB, the largest message p9 accepts).
	maxReaddirCount = 4 << 20
	// linux_dirent64: d_ino[8] d_off[8] d_reclen[2] d_type[1] d_name[].
	hostDirentName = 19
)

// dirReader is the readdir state of an open directory. Entries come from
// getdents64 and are handed out in order; the entries of the last buffer
// that did not fit the caller's budget stay in buf for the next call, so
// resuming where the last call ended returns the rest exactly once.
type dirReader struct {
	mu       sync.Mutex
	buf      *[direntBufSize]byte // from direntBufs; nil when drained
	pos, end int                  // buf[pos:end] holds entries not yet returned
	next     uint64               // offset of the entry at buf[pos] (0 before the first)
}

// direntBufs recycles getdents64 buffers: a directory holds one only while
// it has entries not yet returned.
var direntBufs = sync.Pool{New: func() any { return new([direntBufSize]byte) }}

// drop returns a drained buffer to the pool.
func (d *dirReader) drop() {
	if d.buf != nil && d.pos >= d.end {
		direntBufs.Put(d.buf)
		d.buf = nil
	}
}

// close releases the buffer whatever it holds (the directory is closed).
func (d *dirReader) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pos, d.end = 0, 0
	d.drop()
}

// Readdir implements p9.File.Readdir. offset is a d_off from an earlier
// entry (or 0 to start over); when it is not where the last call ended the
// directory is repositioned with lseek. count is a byte budget of
// 24+len(name) per entry: no more entries are returned than fit. Entries
// carry the host's d_off as their offset and d_type as their type; "." and
// ".." are included, and no entry is stat'ed. An empty result means the
// end of the directory.
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	defer f.exit()
	of, err := f.openFD()
	if err != nil {
		return nil, err
	}
	d := of.dir
	if d == nil {
		return nil, linux.ENOTDIR
	}
	if count > maxReaddirCount {
		count = maxReaddirCount
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.drop()
	if offset != d.next {
		if offset > maxInt64 {
			return nil, linux.EINVAL
		}
		if _, err := unix.Seek(of.fd, int64(offset), unix.SEEK_SET); err != nil {
			return nil, hostErrno(err)
		}
		d.pos, d.end, d.next = 0, 0, offset
	}
	var ents p9.Dirents
	used := uint32(0)
	for {
		if d.pos >= d.end {
			if d.buf == nil {
				d.buf = direntBufs.Get().(*[direntBufSize]byte)
			}
			n, err := getdents(of.fd, d.buf[:])
			if err != nil {
				if len(ents) > 0 {
					return ents, nil
				}
				return nil, hostErrno(err)
			}
			if n == 0 {
				return ents, nil
			}
			d.pos, d.end = 0, n
		}
		rec := d.buf[d.pos:d.end]
		if len(rec) < hostDirentName {
			return nil, linux.EIO
		}
		reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
		if reclen < hostDirentName || reclen > len(rec) {
			return nil, linux.EIO
		}
		name := rec[hostDirentName:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		size := uint32(direntHeader + len(name))
		if used+size > count {
			if len(ents) == 0 {
				// Not even one entry fits (getdents64 says
				// EINVAL too).
				return nil, linux.EINVAL
			}
			return ents, nil
		}
		ino := binary.NativeEndian.Uint64(rec[0:8])
		off := binary.NativeEndian.Uint64(rec[8:16])
		typ := rec[18]
		if f.n == f.fs.root && string(name) == ".." {
			// The root's parent lies outside the export: do not
			// reveal its inode.
			ino = f.n.ino
		}
		path, err := f.fs.devs.path(f.n.dev, ino)
		if err != nil {
			return nil, err
		}
		if ents == nil {
			ents = make(p9.Dirents, 0, min(int(count)/32+1, 512))
		}
		ents = append(ents, p9.Dirent{
			QID:    p9.QID{Type: direntQIDType(typ), Path: path},
			Offset: off,
			Type:   p9.QIDType(typ),
			Name:   string(name),
		})
		used += size
		d.pos += reclen
		d.next = off
	}
}

// direntQIDType is the QID type of a d_type, like p9.FileMode.QIDType.
func direntQIDType(typ uint8) p9.QIDType {
	switch typ {
	case unix.DT_DIR:
		return p9.TypeDir
	case unix.DT_LNK:
		return p9.TypeSymlink
	case unix.DT_SOCK, unix.DT_FIFO, unix.DT_CHR:
		return p9.TypeAppendOnly
	}
	return p9.TypeRegular
}

// getdents reads directory entries, retrying EINTR.
func getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}
