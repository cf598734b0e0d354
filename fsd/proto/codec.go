package proto

import (
	"encoding/binary"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// le is the byte order of every 9P integer.
var le = binary.LittleEndian

// decoder consumes a message body. The first failure is kept in err and every
// later read returns zero values, so decode functions read straight through
// and check once at the end (done).
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) u8() uint8 {
	if len(d.b) < 1 {
		d.fail(ErrShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u16() uint16 {
	if len(d.b) < 2 {
		d.fail(ErrShort)
		return 0
	}
	v := le.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.fail(ErrShort)
		return 0
	}
	v := le.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail(ErrShort)
		return 0
	}
	v := le.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) fid() FID { return FID(d.u32()) }

// str reads a string: length[2] then that many bytes, checked against what
// the frame holds before anything is copied.
func (d *decoder) str() string {
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if len(d.b) < n {
		d.fail(ErrShort)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// bytes returns the next n bytes without copying them.
func (d *decoder) bytes(n uint32) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < uint64(n) {
		d.fail(ErrShort)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) qid() p9.QID {
	return p9.QID{Type: p9.QIDType(d.u8()), Version: d.u32(), Path: d.u64()}
}

// done reports the first failure, or ErrTrailing when bytes are left over.
func (d *decoder) done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return errors.WithMessagef(ErrTrailing, "%d bytes", len(d.b))
	}
	return nil
}

func appendU8(b []byte, v uint8) []byte   { return append(b, v) }
func appendU16(b []byte, v uint16) []byte { return le.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return le.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return le.AppendUint64(b, v) }

// appendStr appends a string whose length the caller has checked
// (checkStrings) to fit in 16 bits.
func appendStr(b []byte, s string) []byte {
	b = le.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendQID(b []byte, q p9.QID) []byte {
	b = append(b, byte(q.Type))
	b = le.AppendUint32(b, q.Version)
	return le.AppendUint64(b, q.Path)
}

// checkStrings fails with ErrStringTooLong when any string exceeds 16 bits.
func checkStrings(ss ...string) error {
	for _, s := range ss {
		if len(s) > MaxStringLen {
			return errors.WithMessagef(ErrStringTooLong, "string of %d bytes", len(s))
		}
	}
	return nil
}

// Wire bits of Tgetattr's request mask and Rgetattr's valid mask
// (P9_GETATTR_*).
const (
	getattrMode        = 0x00000001
	getattrNlink       = 0x00000002
	getattrUID         = 0x00000004
	getattrGID         = 0x00000008
	getattrRdev        = 0x00000010
	getattrAtime       = 0x00000020
	getattrMtime       = 0x00000040
	getattrCtime       = 0x00000080
	getattrIno         = 0x00000100
	getattrSize        = 0x00000200
	getattrBlocks      = 0x00000400
	getattrBtime       = 0x00000800
	getattrGen         = 0x00001000
	getattrDataVersion = 0x00002000
)

// AttrMaskBits returns the wire form of m. Bits p9.AttrMask has no field for
// are not representable and so never set.
func AttrMaskBits(m p9.AttrMask) uint64 {
	var v uint64
	set := func(ok bool, bit uint64) {
		if ok {
			v |= bit
		}
	}
	set(m.Mode, getattrMode)
	set(m.NLink, getattrNlink)
	set(m.UID, getattrUID)
	set(m.GID, getattrGID)
	set(m.RDev, getattrRdev)
	set(m.ATime, getattrAtime)
	set(m.MTime, getattrMtime)
	set(m.CTime, getattrCtime)
	set(m.INo, getattrIno)
	set(m.Size, getattrSize)
	set(m.Blocks, getattrBlocks)
	set(m.BTime, getattrBtime)
	set(m.Gen, getattrGen)
	set(m.DataVersion, getattrDataVersion)
	return v
}

// AttrMaskFromBits decodes a wire getattr mask; unknown bits are ignored.
func AttrMaskFromBits(v uint64) p9.AttrMask {
	return p9.AttrMask{
		Mode:        v&getattrMode != 0,
		NLink:       v&getattrNlink != 0,
		UID:         v&getattrUID != 0,
		GID:         v&getattrGID != 0,
		RDev:        v&getattrRdev != 0,
		ATime:       v&getattrAtime != 0,
		MTime:       v&getattrMtime != 0,
		CTime:       v&getattrCtime != 0,
		INo:         v&getattrIno != 0,
		Size:        v&getattrSize != 0,
		Blocks:      v&getattrBlocks != 0,
		BTime:       v&getattrBtime != 0,
		Gen:         v&getattrGen != 0,
		DataVersion: v&getattrDataVersion != 0,
	}
}

// Wire bits of Tsetattr's valid mask (P9_ATTR_*).
const (
	setattrMode     = 0x00000001
	setattrUID      = 0x00000002
	setattrGID      = 0x00000004
	setattrSize     = 0x00000008
	setattrAtime    = 0x00000010
	setattrMtime    = 0x00000020
	setattrCtime    = 0x00000040
	setattrAtimeSet = 0x00000080
	setattrMtimeSet = 0x00000100
)

// SetAttrMaskBits returns the wire form of m.
func SetAttrMaskBits(m p9.SetAttrMask) uint32 {
	var v uint32
	set := func(ok bool, bit uint32) {
		if ok {
			v |= bit
		}
	}
	set(m.Permissions, setattrMode)
	set(m.UID, setattrUID)
	set(m.GID, setattrGID)
	set(m.Size, setattrSize)
	set(m.ATime, setattrAtime)
	set(m.MTime, setattrMtime)
	set(m.CTime, setattrCtime)
	set(m.ATimeNotSystemTime, setattrAtimeSet)
	set(m.MTimeNotSystemTime, setattrMtimeSet)
	return v
}

// SetAttrMaskFromBits decodes a wire setattr mask; unknown bits are ignored.
func SetAttrMaskFromBits(v uint32) p9.SetAttrMask {
	return p9.SetAttrMask{
		Permissions:        v&setattrMode != 0,
		UID:                v&setattrUID != 0,
		GID:                v&setattrGID != 0,
		Size:               v&setattrSize != 0,
		ATime:              v&setattrAtime != 0,
		MTime:              v&setattrMtime != 0,
		CTime:              v&setattrCtime != 0,
		ATimeNotSystemTime: v&setattrAtimeSet != 0,
		MTimeNotSystemTime: v&setattrMtimeSet != 0,
	}
}

// DirentSize is the wire size of a directory entry named name.
func DirentSize(name string) int { return DirentFixedSize + len(name) }

// AppendDirent appends the wire form of d (qid[13] offset[8] type[1]
// name[s]). It fails with ErrStringTooLong for a name over 16 bits.
func AppendDirent(b []byte, d *p9.Dirent) ([]byte, error) {
	if len(d.Name) > MaxStringLen {
		return b, errors.WithMessagef(ErrStringTooLong, "dirent name of %d bytes", len(d.Name))
	}
	b = appendQID(b, d.QID)
	b = appendU64(b, d.Offset)
	b = appendU8(b, uint8(d.Type))
	return appendStr(b, d.Name), nil
}

// AppendDirentBytes is AppendDirent for an entry whose name is held as
// bytes: an attach point can encode straight from its host's records,
// with no Dirent and no string per entry.
func AppendDirentBytes(b []byte, qid p9.QID, offset uint64, typ p9.QIDType, name []byte) ([]byte, error) {
	if len(name) > MaxStringLen {
		return b, errors.WithMessagef(ErrStringTooLong, "dirent name of %d bytes", len(name))
	}
	b = appendQID(b, qid)
	b = appendU64(b, offset)
	b = appendU8(b, uint8(typ))
	b = appendU16(b, uint16(len(name)))
	return append(b, name...), nil
}

func (d *decoder) dirent() p9.Dirent {
	return p9.Dirent{QID: d.qid(), Offset: d.u64(), Type: p9.QIDType(d.u8()), Name: d.str()}
}

func appendAttr(b []byte, a *p9.Attr) []byte {
	b = appendU32(b, uint32(a.Mode))
	b = appendU32(b, uint32(a.UID))
	b = appendU32(b, uint32(a.GID))
	b = appendU64(b, uint64(a.NLink))
	b = appendU64(b, uint64(a.RDev))
	b = appendU64(b, a.Size)
	b = appendU64(b, a.BlockSize)
	b = appendU64(b, a.Blocks)
	b = appendU64(b, a.ATimeSeconds)
	b = appendU64(b, a.ATimeNanoSeconds)
	b = appendU64(b, a.MTimeSeconds)
	b = appendU64(b, a.MTimeNanoSeconds)
	b = appendU64(b, a.CTimeSeconds)
	b = appendU64(b, a.CTimeNanoSeconds)
	b = appendU64(b, a.BTimeSeconds)
	b = appendU64(b, a.BTimeNanoSeconds)
	b = appendU64(b, a.Gen)
	return appendU64(b, a.DataVersion)
}

func (d *decoder) attr() p9.Attr {
	return p9.Attr{
		Mode:             p9.FileMode(d.u32()),
		UID:              p9.UID(d.u32()),
		GID:              p9.GID(d.u32()),
		NLink:            p9.NLink(d.u64()),
		RDev:             p9.Dev(d.u64()),
		Size:             d.u64(),
		BlockSize:        d.u64(),
		Blocks:           d.u64(),
		ATimeSeconds:     d.u64(),
		ATimeNanoSeconds: d.u64(),
		MTimeSeconds:     d.u64(),
		MTimeNanoSeconds: d.u64(),
		CTimeSeconds:     d.u64(),
		CTimeNanoSeconds: d.u64(),
		BTimeSeconds:     d.u64(),
		BTimeNanoSeconds: d.u64(),
		Gen:              d.u64(),
		DataVersion:      d.u64(),
	}
}

// appendSetAttr appends Tsetattr's attribute block. The mode is written as
// the full 32-bit value: setuid, setgid and sticky are never masked away.
func appendSetAttr(b []byte, a *p9.SetAttr) []byte {
	b = appendU32(b, uint32(a.Permissions))
	b = appendU32(b, uint32(a.UID))
	b = appendU32(b, uint32(a.GID))
	b = appendU64(b, a.Size)
	b = appendU64(b, a.ATimeSeconds)
	b = appendU64(b, a.ATimeNanoSeconds)
	b = appendU64(b, a.MTimeSeconds)
	return appendU64(b, a.MTimeNanoSeconds)
}

func (d *decoder) setAttr() p9.SetAttr {
	return p9.SetAttr{
		Permissions:      p9.FileMode(d.u32()),
		UID:              p9.UID(d.u32()),
		GID:              p9.GID(d.u32()),
		Size:             d.u64(),
		ATimeSeconds:     d.u64(),
		ATimeNanoSeconds: d.u64(),
		MTimeSeconds:     d.u64(),
		MTimeNanoSeconds: d.u64(),
	}
}

func appendFSStat(b []byte, s *p9.FSStat) []byte {
	b = appendU32(b, s.Type)
	b = appendU32(b, s.BlockSize)
	b = appendU64(b, s.Blocks)
	b = appendU64(b, s.BlocksFree)
	b = appendU64(b, s.BlocksAvailable)
	b = appendU64(b, s.Files)
	b = appendU64(b, s.FilesFree)
	b = appendU64(b, s.FSID)
	return appendU32(b, s.NameLength)
}

func (d *decoder) fsStat() p9.FSStat {
	return p9.FSStat{
		Type:            d.u32(),
		BlockSize:       d.u32(),
		Blocks:          d.u64(),
		BlocksFree:      d.u64(),
		BlocksAvailable: d.u64(),
		Files:           d.u64(),
		FilesFree:       d.u64(),
		FSID:            d.u64(),
		NameLength:      d.u32(),
	}
}
