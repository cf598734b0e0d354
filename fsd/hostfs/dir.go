package hostfs

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

const (
	// direntBufSize bounds one getdents64 call: about a thousand short
	// names per system call.
	direntBufSize = 32 << 10
	// direntHeader is the fixed part of a 9P dirent: qid[13] offset[8]
	// type[1] name length[2]; the name follows.
	direntHeader = 24
	// ReaddirChunk bounds the byte budget of one Readdir whatever the
	// caller asks (see dirReader): Linux asks for msize bytes.
	ReaddirChunk = 64 << 10
	// linux_dirent64: d_ino[8] d_off[8] d_reclen[2] d_type[1] d_name[].
	hostDirentName = 19
	// hostDirentSlack is how much longer a host record can be than the
	// 9P entry of the same name: 19+len+1 rounded up to 8 against
	// 24+len, at most 3 bytes. A getdents64 buffer of the budget left
	// plus this slack therefore always has room for the next entry if
	// the budget has.
	hostDirentSlack = 3
)

// dirReader is the readdir state of an open directory: where the host's
// directory position stands, and the entries read ahead, if any. A call
// that gets more entries from getdents64 than its budget holds puts the
// host's position back at the first entry it did not return (one lseek).
//
// Read-ahead: a large directory is read in chunks of at most ReaddirChunk
// bytes, and once a call has returned a full chunk the next one is read
// in the background, while the guest takes in this one: the host's
// getdents64 (most of a readdir's cost in the daemon) overlaps the guest's
// work instead of adding to it, and the first entries reach the guest
// after one chunk's work rather than the whole directory's. The chunk read
// ahead is used by a call that continues where the last one ended with at
// least the same budget, and dropped otherwise (the next call reads
// afresh). At most maxReadAhead chunks are held across the process, so a
// guest holding many partly read directories pins little memory (review
// finding 2); a directory without a slot is simply not read ahead.
type dirReader struct {
	mu sync.Mutex
	// next is the d_off of the last entry returned or read ahead (0
	// before the first): the host position the directory fd stands at,
	// or unknownPos when an lseek that should have put it there failed.
	next uint64
	// ahead holds the entries read ahead, from offset aheadAt with
	// budget aheadCount; it holds a readAheadSlots token.
	ahead      *direntScratch
	aheadAt    uint64
	aheadCount uint32
	// gen counts the calls: a read-ahead started by one call is dropped
	// when another call came first.
	gen uint64
}

const (
	// maxReadAhead bounds the chunks read ahead and held across the
	// process.
	maxReadAhead = 16
	// readAheadMin is the smallest budget read ahead: a smaller one is
	// a client reading a few entries at a time, for which a background
	// goroutine per call would cost more than it saves.
	readAheadMin = 8 << 10
)

// readAheadSlots holds a token per chunk being read ahead or held.
var readAheadSlots = make(chan struct{}, maxReadAhead)

// takeAhead returns the entries read ahead if they are what a call at
// offset with budget count would read, or nil; either way none are held
// afterwards. The caller holds d.mu.
func (d *dirReader) takeAhead(offset uint64, count uint32) *direntScratch {
	s := d.detach()
	if s == nil || offset == d.aheadAt && count >= d.aheadCount {
		return s
	}
	// d.next is where the read-ahead ended: the caller seeks.
	s.put()
	return nil
}

// drop releases the entries read ahead (the directory is being closed).
func (d *dirReader) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.detach(); s != nil {
		s.put()
	}
}

// detach ends any read-ahead in flight (it finds gen changed) and returns
// the entries read ahead, if any, giving back their slot. The caller holds
// d.mu.
func (d *dirReader) detach() *direntScratch {
	d.gen++
	s := d.ahead
	if s != nil {
		d.ahead = nil
		<-readAheadSlots
	}
	return s
}

// readAhead starts reading the chunk after s in the background when s was
// a full chunk (more entries may follow) and a slot is free. The caller
// holds d.mu and is inside a call on f (f.enter).
func (f *file) readAhead(d *dirReader, fd int, count uint32, s *direntScratch) {
	if count < readAheadMin || s.eof || len(s.ents) == 0 || d.next == unknownPos {
		return
	}
	select {
	case readAheadSlots <- struct{}{}:
	default:
		return
	}
	if f.enter() != nil {
		<-readAheadSlots
		return
	}
	gen := d.gen
	go func() {
		defer f.exit()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen != gen || d.next == unknownPos {
			// A call came first, or the position is lost.
			<-readAheadSlots
			return
		}
		at := d.next
		ns := direntScratches.Get().(*direntScratch)
		if err := f.readEntries(fd, d, count, ns); err != nil || len(ns.ents) == 0 {
			// The call that wants them reads (and fails) again.
			ns.put()
			<-readAheadSlots
			return
		}
		d.ahead, d.aheadAt, d.aheadCount = ns, at, count
	}()
}

// unknownPos is a dirReader.next no offset from the guest can equal
// (offsets above maxInt64 are refused), so the next call seeks.
const unknownPos = ^uint64(0)

// Readdir implements p9.File.Readdir. offset is a d_off from an earlier
// entry (or 0 to start over); when it is not where the last call ended the
// directory is repositioned with lseek. count is a byte budget of
// 24+len(name) per entry: no more entries are returned than fit. Entries
// carry the host's d_off as their offset and d_type as their type; "." and
// ".." are included, and no entry is stat'ed. An empty result means the
// end of the directory.
//
// A call allocates twice whatever the number of entries: the Dirents, of
// the exact length, and one string that holds every name (each Name is a
// substring of it). Both belong to the caller; hostfs keeps no reference
// to them (the entries are gathered in pooled scratch space first).
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	defer f.exit()
	s, err := f.gather(offset, count)
	if err != nil {
		return nil, err
	}
	defer s.put()
	return s.dirents(), nil
}

// AppendReaddir is Readdir that appends the entries to b in their 9P2000.L
// wire form (proto.AppendDirent's: qid[13] offset[8] type[1] name[s],
// count bytes at most) instead of returning Dirents, and allocates
// nothing: the server's Treaddir encodes through it
// (server.DirentAppender). A 10,000-entry directory would otherwise cost
// half a megabyte of Dirents per call, which the garbage collector then
// clears.
func (f *file) AppendReaddir(b []byte, offset uint64, count uint32) ([]byte, error) {
	if err := f.enter(); err != nil {
		return b, err
	}
	defer f.exit()
	s, err := f.gather(offset, count)
	if err != nil {
		return b, err
	}
	defer s.put()
	return s.appendWire(b)
}

// gather reads the entries of Readdir(offset, count) into a pooled
// scratch, which the caller puts back.
func (f *file) gather(offset uint64, count uint32) (*direntScratch, error) {
	of, err := f.openFD()
	if err != nil {
		return nil, err
	}
	d := of.dir
	if d == nil {
		return nil, linux.ENOTDIR
	}
	count = min(count, ReaddirChunk)
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.takeAhead(offset, count); s != nil {
		f.readAhead(d, of.fd, count, s)
		return s, nil
	}
	if offset != d.next {
		if offset > maxInt64 {
			return nil, linux.EINVAL
		}
		if _, err := unix.Seek(of.fd, int64(offset), unix.SEEK_SET); err != nil {
			d.next = unknownPos
			return nil, hostErrno(err)
		}
		d.next = offset
	}
	s := direntScratches.Get().(*direntScratch)
	if err := f.readEntries(of.fd, d, count, s); err != nil {
		s.put()
		return nil, err
	}
	f.readAhead(d, of.fd, count, s)
	return s, nil
}

// readEntries gathers into s the entries that fit in count bytes, from
// getdents64 calls into s.buf, each asking for no more than the budget
// left (plus the slack a host record may need). When the last call
// returned entries past the budget, the directory is put back with lseek
// at the first of them, so the next call reads them again and nothing is
// kept. It fails only when it has no entry to return: a getdents64 error
// after some entries ends the call with those.
func (f *file) readEntries(fd int, d *dirReader, count uint32, s *direntScratch) error {
	// QID paths: the inode number itself on the export root's device
	// (devices.path's fast case, inlined here), devices.path otherwise.
	sameDev := f.n.dev == f.fs.devs.rootDev
	isRoot := f.n == f.fs.root
	used := uint32(0)
	for {
		left := count - used
		if left < direntHeader+1 && len(s.ents) > 0 {
			// No entry fits any more.
			return nil
		}
		n, err := getdents(fd, s.buf[:min(int(left)+hostDirentSlack, direntBufSize)])
		if err != nil {
			if len(s.ents) > 0 {
				// EINVAL included: the next entry is larger
				// than the budget left (getdents64 moved
				// nothing).
				return nil
			}
			return hostErrno(err)
		}
		if n == 0 {
			s.eof = true
			return nil
		}
		for pos := 0; pos < n; {
			rec := s.buf[pos:n]
			if len(rec) < hostDirentName {
				return d.stop(fd, s, linux.EIO)
			}
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < hostDirentName || reclen > len(rec) {
				return d.stop(fd, s, linux.EIO)
			}
			name := direntName(rec[hostDirentName:reclen])
			size := uint32(direntHeader + len(name))
			if used+size > count {
				// Not even one entry fits (getdents64 says
				// EINVAL too) when there is none yet.
				return d.stop(fd, s, linux.EINVAL)
			}
			ino := binary.NativeEndian.Uint64(rec[0:8])
			off := binary.NativeEndian.Uint64(rec[8:16])
			typ := rec[18]
			if isRoot && string(name) == ".." {
				// The root's parent lies outside the export: do not
				// reveal its inode.
				ino = f.n.ino
			}
			path := ino
			if !sameDev || ino&^inoMask != 0 {
				if path, err = f.fs.devs.path(f.n.dev, ino); err != nil {
					return d.stop(fd, s, err)
				}
			}
			s.names = append(s.names, name...)
			s.ents = append(s.ents, scratchDirent{
				path: path,
				off:  off,
				typ:  typ,
				end:  uint32(len(s.names)),
			})
			used += size
			pos += reclen
			d.next = off
		}
	}
}

// stop ends a call in the middle of what getdents64 returned: it puts the
// directory's host position back after the last entry returned (d.next)
// and returns err, or nil when s holds entries (they are returned; the
// entry that stopped the call is read again by the next one). If the
// lseek fails, the position is unknown and the next call seeks to the
// offset it is given.
func (d *dirReader) stop(fd int, s *direntScratch, err error) error {
	if _, serr := unix.Seek(fd, int64(d.next), unix.SEEK_SET); serr != nil {
		d.next = unknownPos
	}
	if len(s.ents) > 0 {
		return nil
	}
	return err
}

// direntScratch is where one Readdir call reads host records (buf) and
// gathers its entries before their exact-size allocations: the entries
// (pointer-free, the names as end offsets) and the names back to back. A
// call holds one only while it runs; direntScratches recycles them.
type direntScratch struct {
	buf   [direntBufSize]byte
	ents  []scratchDirent
	names []byte
	eof   bool // getdents64 reached the end of the directory
}

// scratchDirent is one entry of a direntScratch; its name is
// names[previous entry's end:end].
type scratchDirent struct {
	path uint64
	off  uint64
	end  uint32
	typ  uint8
}

var direntScratches = sync.Pool{New: func() any { return new(direntScratch) }}

// A pooled scratch is kept only up to what a ReaddirChunk budget can need,
// with room for append's growth; a budget is never larger, so this only
// guards the pool against a change of that bound.
const (
	maxScratchNames = 2 * ReaddirChunk
	maxScratchEnts  = 2 * (ReaddirChunk/(direntHeader+1) + 1)
)

// put empties s and returns it to the pool.
func (s *direntScratch) put() {
	if cap(s.names) > maxScratchNames || cap(s.ents) > maxScratchEnts {
		return
	}
	s.ents, s.names, s.eof = s.ents[:0], s.names[:0], false
	direntScratches.Put(s)
}

// dirents returns the gathered entries as the caller's own Dirents (nil
// when there are none): two allocations, the slice and the names.
func (s *direntScratch) dirents() p9.Dirents {
	if len(s.ents) == 0 {
		return nil
	}
	names := string(s.names)
	out := make(p9.Dirents, len(s.ents))
	start := uint32(0)
	for i := range s.ents {
		e := &s.ents[i]
		out[i] = p9.Dirent{
			QID:    p9.QID{Type: direntQIDType(e.typ), Path: e.path},
			Offset: e.off,
			Type:   p9.QIDType(e.typ),
			Name:   names[start:e.end],
		}
		start = e.end
	}
	return out
}

// appendWire appends the gathered entries to b in the 9P2000.L wire form.
func (s *direntScratch) appendWire(b []byte) ([]byte, error) {
	start := uint32(0)
	for i := range s.ents {
		e := &s.ents[i]
		var err error
		b, err = proto.AppendDirentBytes(b, p9.QID{Type: direntQIDType(e.typ), Path: e.path}, e.off, p9.QIDType(e.typ), s.names[start:e.end])
		if err != nil {
			return b, linux.ENAMETOOLONG
		}
		start = e.end
	}
	return b, nil
}

// direntName returns the name in a linux_dirent64's name field, which
// holds the name, its NUL and up to 7 bytes of padding (the record is
// rounded up to 8 bytes): the NUL is among the last 8 bytes, so only they
// are searched (the whole field if, against the format, it is not there).
func direntName(field []byte) []byte {
	for i := max(len(field)-8, 0); i < len(field); i++ {
		if field[i] == 0 {
			return field[:i]
		}
	}
	if i := bytes.IndexByte(field, 0); i >= 0 {
		return field[:i]
	}
	return field
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
