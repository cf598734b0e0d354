package proto

import "github.com/hugelgupf/p9/p9"

// Rlerror is an error reply: the Linux errno of a failed request.
type Rlerror struct {
	// Ecode is the Linux errno.
	Ecode uint32
}

// Type implements Message.Type.
func (*Rlerror) Type() MsgType { return TypeRlerror }

func (m *Rlerror) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, m.Ecode)
	return b, nil
}

func (m *Rlerror) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Ecode = d.u32()
	return d.done()
}

// Tstatfs asks for file system statistics.
type Tstatfs struct {
	// FID is any fid on the file system.
	FID FID
}

// Type implements Message.Type.
func (*Tstatfs) Type() MsgType { return TypeTstatfs }

func (m *Tstatfs) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	return b, nil
}

func (m *Tstatfs) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	return d.done()
}

// Rstatfs answers Tstatfs.
type Rstatfs struct {
	// Stat is the statistics.
	Stat p9.FSStat
}

// Type implements Message.Type.
func (*Rstatfs) Type() MsgType { return TypeRstatfs }

func (m *Rstatfs) appendBody(b []byte) ([]byte, error) {
	b = appendFSStat(b, &m.Stat)
	return b, nil
}

func (m *Rstatfs) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Stat = d.fsStat()
	return d.done()
}

// Tlopen opens the file fid names.
type Tlopen struct {
	// FID is the file to open.
	FID FID
	// Flags is Linux open flags (P9_DOTL_* values).
	Flags p9.OpenFlags
}

// Type implements Message.Type.
func (*Tlopen) Type() MsgType { return TypeTlopen }

func (m *Tlopen) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, uint32(m.Flags))
	return b, nil
}

func (m *Tlopen) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Flags = p9.OpenFlags(d.u32())
	return d.done()
}

// Rlopen answers Tlopen.
type Rlopen struct {
	// QID is the opened file.
	QID p9.QID
	// IOUnit is the preferred I/O size, 0 for none.
	IOUnit uint32
}

// Type implements Message.Type.
func (*Rlopen) Type() MsgType { return TypeRlopen }

func (m *Rlopen) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	b = appendU32(b, m.IOUnit)
	return b, nil
}

func (m *Rlopen) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	m.IOUnit = d.u32()
	return d.done()
}

// Tlcreate creates and opens a regular file in the directory fid names; the fid then names the new file.
type Tlcreate struct {
	// FID is the directory, then the new file.
	FID FID
	// Name is the new name.
	Name string
	// Flags is Linux open flags.
	Flags p9.OpenFlags
	// Mode is the full mode, setuid/setgid/sticky included.
	Mode p9.FileMode
	// GID is the owning group.
	GID p9.GID
}

// Type implements Message.Type.
func (*Tlcreate) Type() MsgType { return TypeTlcreate }

func (m *Tlcreate) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendStr(b, m.Name)
	b = appendU32(b, uint32(m.Flags))
	b = appendU32(b, uint32(m.Mode))
	b = appendU32(b, uint32(m.GID))
	return b, nil
}

func (m *Tlcreate) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Name = d.str()
	m.Flags = p9.OpenFlags(d.u32())
	m.Mode = p9.FileMode(d.u32())
	m.GID = p9.GID(d.u32())
	return d.done()
}

// Rlcreate answers Tlcreate.
type Rlcreate struct {
	// QID is the new file.
	QID p9.QID
	// IOUnit is the preferred I/O size, 0 for none.
	IOUnit uint32
}

// Type implements Message.Type.
func (*Rlcreate) Type() MsgType { return TypeRlcreate }

func (m *Rlcreate) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	b = appendU32(b, m.IOUnit)
	return b, nil
}

func (m *Rlcreate) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	m.IOUnit = d.u32()
	return d.done()
}

// Tsymlink creates a symbolic link.
type Tsymlink struct {
	// FID is the directory.
	FID FID
	// Name is the new link's name.
	Name string
	// Target is what the link points to.
	Target string
	// GID is the owning group.
	GID p9.GID
}

// Type implements Message.Type.
func (*Tsymlink) Type() MsgType { return TypeTsymlink }

func (m *Tsymlink) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name, m.Target); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendStr(b, m.Name)
	b = appendStr(b, m.Target)
	b = appendU32(b, uint32(m.GID))
	return b, nil
}

func (m *Tsymlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Name = d.str()
	m.Target = d.str()
	m.GID = p9.GID(d.u32())
	return d.done()
}

// Rsymlink answers Tsymlink.
type Rsymlink struct {
	// QID is the new link.
	QID p9.QID
}

// Type implements Message.Type.
func (*Rsymlink) Type() MsgType { return TypeRsymlink }

func (m *Rsymlink) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	return b, nil
}

func (m *Rsymlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	return d.done()
}

// Tmknod creates a device node, FIFO or socket.
type Tmknod struct {
	// DirFID is the directory.
	DirFID FID
	// Name is the new name.
	Name string
	// Mode is the full mode including the file type.
	Mode p9.FileMode
	// Major is the device major number.
	Major uint32
	// Minor is the device minor number.
	Minor uint32
	// GID is the owning group.
	GID p9.GID
}

// Type implements Message.Type.
func (*Tmknod) Type() MsgType { return TypeTmknod }

func (m *Tmknod) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.DirFID))
	b = appendStr(b, m.Name)
	b = appendU32(b, uint32(m.Mode))
	b = appendU32(b, m.Major)
	b = appendU32(b, m.Minor)
	b = appendU32(b, uint32(m.GID))
	return b, nil
}

func (m *Tmknod) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.DirFID = FID(d.u32())
	m.Name = d.str()
	m.Mode = p9.FileMode(d.u32())
	m.Major = d.u32()
	m.Minor = d.u32()
	m.GID = p9.GID(d.u32())
	return d.done()
}

// Rmknod answers Tmknod.
type Rmknod struct {
	// QID is the new node.
	QID p9.QID
}

// Type implements Message.Type.
func (*Rmknod) Type() MsgType { return TypeRmknod }

func (m *Rmknod) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	return b, nil
}

func (m *Rmknod) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	return d.done()
}

// Trename renames the file fid names into a directory.
type Trename struct {
	// FID is the file to rename.
	FID FID
	// DirFID is the target directory.
	DirFID FID
	// Name is the new name.
	Name string
}

// Type implements Message.Type.
func (*Trename) Type() MsgType { return TypeTrename }

func (m *Trename) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, uint32(m.DirFID))
	b = appendStr(b, m.Name)
	return b, nil
}

func (m *Trename) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.DirFID = FID(d.u32())
	m.Name = d.str()
	return d.done()
}

// Rrename answers Trename.
type Rrename struct {
}

// Type implements Message.Type.
func (*Rrename) Type() MsgType { return TypeRrename }

func (*Rrename) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rrename) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Treadlink reads a symbolic link.
type Treadlink struct {
	// FID is the link.
	FID FID
}

// Type implements Message.Type.
func (*Treadlink) Type() MsgType { return TypeTreadlink }

func (m *Treadlink) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	return b, nil
}

func (m *Treadlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	return d.done()
}

// Rreadlink answers Treadlink.
type Rreadlink struct {
	// Target is the link's target.
	Target string
}

// Type implements Message.Type.
func (*Rreadlink) Type() MsgType { return TypeRreadlink }

func (m *Rreadlink) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Target); err != nil {
		return b, err
	}
	b = appendStr(b, m.Target)
	return b, nil
}

func (m *Rreadlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Target = d.str()
	return d.done()
}

// Tgetattr asks for a file's attributes.
type Tgetattr struct {
	// FID is the file.
	FID FID
	// Mask is the attributes wanted.
	Mask p9.AttrMask
}

// Type implements Message.Type.
func (*Tgetattr) Type() MsgType { return TypeTgetattr }

func (m *Tgetattr) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	b = appendU64(b, AttrMaskBits(m.Mask))
	return b, nil
}

func (m *Tgetattr) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Mask = AttrMaskFromBits(d.u64())
	return d.done()
}

// Rgetattr answers Tgetattr.
type Rgetattr struct {
	// Valid is the attributes filled in.
	Valid p9.AttrMask
	// QID is the file.
	QID p9.QID
	// Attr is the attributes.
	Attr p9.Attr
}

// Type implements Message.Type.
func (*Rgetattr) Type() MsgType { return TypeRgetattr }

func (m *Rgetattr) appendBody(b []byte) ([]byte, error) {
	b = appendU64(b, AttrMaskBits(m.Valid))
	b = appendQID(b, m.QID)
	b = appendAttr(b, &m.Attr)
	return b, nil
}

func (m *Rgetattr) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Valid = AttrMaskFromBits(d.u64())
	m.QID = d.qid()
	m.Attr = d.attr()
	return d.done()
}

// Tsetattr changes a file's attributes.
type Tsetattr struct {
	// FID is the file.
	FID FID
	// Valid is the attributes to change.
	Valid p9.SetAttrMask
	// Attr is the new values; the mode is the full 32-bit value.
	Attr p9.SetAttr
}

// Type implements Message.Type.
func (*Tsetattr) Type() MsgType { return TypeTsetattr }

func (m *Tsetattr) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, SetAttrMaskBits(m.Valid))
	b = appendSetAttr(b, &m.Attr)
	return b, nil
}

func (m *Tsetattr) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Valid = SetAttrMaskFromBits(d.u32())
	m.Attr = d.setAttr()
	return d.done()
}

// Rsetattr answers Tsetattr.
type Rsetattr struct {
}

// Type implements Message.Type.
func (*Rsetattr) Type() MsgType { return TypeRsetattr }

func (*Rsetattr) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rsetattr) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Txattrwalk prepares to read an extended attribute (or, with an empty name, the list of names) through a new fid.
type Txattrwalk struct {
	// FID is the file.
	FID FID
	// NewFID is the fid that will hold the value.
	NewFID FID
	// Name is the attribute, empty for the list.
	Name string
}

// Type implements Message.Type.
func (*Txattrwalk) Type() MsgType { return TypeTxattrwalk }

func (m *Txattrwalk) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, uint32(m.NewFID))
	b = appendStr(b, m.Name)
	return b, nil
}

func (m *Txattrwalk) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.NewFID = FID(d.u32())
	m.Name = d.str()
	return d.done()
}

// Rxattrwalk answers Txattrwalk.
type Rxattrwalk struct {
	// Size is the value's size in bytes.
	Size uint64
}

// Type implements Message.Type.
func (*Rxattrwalk) Type() MsgType { return TypeRxattrwalk }

func (m *Rxattrwalk) appendBody(b []byte) ([]byte, error) {
	b = appendU64(b, m.Size)
	return b, nil
}

func (m *Rxattrwalk) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Size = d.u64()
	return d.done()
}

// Txattrcreate turns fid into a fid that sets an extended attribute when it is clunked.
type Txattrcreate struct {
	// FID is the file.
	FID FID
	// Name is the attribute.
	Name string
	// Size is the value's size in bytes.
	Size uint64
	// Flags is setxattr(2) flags.
	Flags uint32
}

// Type implements Message.Type.
func (*Txattrcreate) Type() MsgType { return TypeTxattrcreate }

func (m *Txattrcreate) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendStr(b, m.Name)
	b = appendU64(b, m.Size)
	b = appendU32(b, m.Flags)
	return b, nil
}

func (m *Txattrcreate) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Name = d.str()
	m.Size = d.u64()
	m.Flags = d.u32()
	return d.done()
}

// Rxattrcreate answers Txattrcreate.
type Rxattrcreate struct {
}

// Type implements Message.Type.
func (*Rxattrcreate) Type() MsgType { return TypeRxattrcreate }

func (*Rxattrcreate) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rxattrcreate) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Treaddir reads directory entries.
type Treaddir struct {
	// FID is the open directory.
	FID FID
	// Offset is where to continue: 0 or an entry's offset.
	Offset uint64
	// Count is the most bytes of entries to return.
	Count uint32
}

// Type implements Message.Type.
func (*Treaddir) Type() MsgType { return TypeTreaddir }

func (m *Treaddir) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	b = appendU64(b, m.Offset)
	b = appendU32(b, m.Count)
	return b, nil
}

func (m *Treaddir) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Offset = d.u64()
	m.Count = d.u32()
	return d.done()
}

// Tlock acquires or releases a POSIX record lock.
type Tlock struct {
	// FID is the open file.
	FID FID
	// LockType is read, write or unlock.
	LockType p9.LockType
	// Flags is P9_LOCK_FLAGS_*.
	Flags p9.LockFlags
	// Start is the first byte.
	Start uint64
	// Length is the number of bytes, 0 for to the end.
	Length uint64
	// ProcID is the client's process.
	ProcID int32
	// ClientID is the client's name.
	ClientID string
}

// Type implements Message.Type.
func (*Tlock) Type() MsgType { return TypeTlock }

func (m *Tlock) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.ClientID); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU8(b, uint8(m.LockType))
	b = appendU32(b, uint32(m.Flags))
	b = appendU64(b, m.Start)
	b = appendU64(b, m.Length)
	b = appendU32(b, uint32(m.ProcID))
	b = appendStr(b, m.ClientID)
	return b, nil
}

func (m *Tlock) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.LockType = p9.LockType(d.u8())
	m.Flags = p9.LockFlags(d.u32())
	m.Start = d.u64()
	m.Length = d.u64()
	m.ProcID = int32(d.u32())
	m.ClientID = d.str()
	return d.done()
}

// Rlock answers Tlock.
type Rlock struct {
	// Status is the outcome.
	Status p9.LockStatus
}

// Type implements Message.Type.
func (*Rlock) Type() MsgType { return TypeRlock }

func (m *Rlock) appendBody(b []byte) ([]byte, error) {
	b = appendU8(b, uint8(m.Status))
	return b, nil
}

func (m *Rlock) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Status = p9.LockStatus(d.u8())
	return d.done()
}

// Tgetlock tests for a conflicting POSIX record lock.
type Tgetlock struct {
	// FID is the open file.
	FID FID
	// LockType is the lock that would be taken.
	LockType p9.LockType
	// Start is the first byte.
	Start uint64
	// Length is the number of bytes.
	Length uint64
	// ProcID is the client's process.
	ProcID int32
	// ClientID is the client's name.
	ClientID string
}

// Type implements Message.Type.
func (*Tgetlock) Type() MsgType { return TypeTgetlock }

func (m *Tgetlock) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.ClientID); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU8(b, uint8(m.LockType))
	b = appendU64(b, m.Start)
	b = appendU64(b, m.Length)
	b = appendU32(b, uint32(m.ProcID))
	b = appendStr(b, m.ClientID)
	return b, nil
}

func (m *Tgetlock) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.LockType = p9.LockType(d.u8())
	m.Start = d.u64()
	m.Length = d.u64()
	m.ProcID = int32(d.u32())
	m.ClientID = d.str()
	return d.done()
}

// Rgetlock answers Tgetlock: the conflicting lock, or LockType unlock.
type Rgetlock struct {
	// LockType is the conflicting lock's type.
	LockType p9.LockType
	// Start is its first byte.
	Start uint64
	// Length is its length.
	Length uint64
	// ProcID is its owner.
	ProcID int32
	// ClientID is its owner's client.
	ClientID string
}

// Type implements Message.Type.
func (*Rgetlock) Type() MsgType { return TypeRgetlock }

func (m *Rgetlock) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.ClientID); err != nil {
		return b, err
	}
	b = appendU8(b, uint8(m.LockType))
	b = appendU64(b, m.Start)
	b = appendU64(b, m.Length)
	b = appendU32(b, uint32(m.ProcID))
	b = appendStr(b, m.ClientID)
	return b, nil
}

func (m *Rgetlock) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.LockType = p9.LockType(d.u8())
	m.Start = d.u64()
	m.Length = d.u64()
	m.ProcID = int32(d.u32())
	m.ClientID = d.str()
	return d.done()
}

// Tlink creates a hard link.
type Tlink struct {
	// DirFID is the directory.
	DirFID FID
	// FID is the file to link.
	FID FID
	// Name is the new name.
	Name string
}

// Type implements Message.Type.
func (*Tlink) Type() MsgType { return TypeTlink }

func (m *Tlink) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.DirFID))
	b = appendU32(b, uint32(m.FID))
	b = appendStr(b, m.Name)
	return b, nil
}

func (m *Tlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.DirFID = FID(d.u32())
	m.FID = FID(d.u32())
	m.Name = d.str()
	return d.done()
}

// Rlink answers Tlink.
type Rlink struct {
}

// Type implements Message.Type.
func (*Rlink) Type() MsgType { return TypeRlink }

func (*Rlink) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rlink) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Tmkdir creates a directory.
type Tmkdir struct {
	// DirFID is the parent.
	DirFID FID
	// Name is the new name.
	Name string
	// Mode is the full mode, setgid/sticky included.
	Mode p9.FileMode
	// GID is the owning group.
	GID p9.GID
}

// Type implements Message.Type.
func (*Tmkdir) Type() MsgType { return TypeTmkdir }

func (m *Tmkdir) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.DirFID))
	b = appendStr(b, m.Name)
	b = appendU32(b, uint32(m.Mode))
	b = appendU32(b, uint32(m.GID))
	return b, nil
}

func (m *Tmkdir) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.DirFID = FID(d.u32())
	m.Name = d.str()
	m.Mode = p9.FileMode(d.u32())
	m.GID = p9.GID(d.u32())
	return d.done()
}

// Rmkdir answers Tmkdir.
type Rmkdir struct {
	// QID is the new directory.
	QID p9.QID
}

// Type implements Message.Type.
func (*Rmkdir) Type() MsgType { return TypeRmkdir }

func (m *Rmkdir) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	return b, nil
}

func (m *Rmkdir) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	return d.done()
}

// Trenameat renames an entry from one directory to another.
type Trenameat struct {
	// OldDirFID is the source directory.
	OldDirFID FID
	// OldName is the source name.
	OldName string
	// NewDirFID is the target directory.
	NewDirFID FID
	// NewName is the target name.
	NewName string
}

// Type implements Message.Type.
func (*Trenameat) Type() MsgType { return TypeTrenameat }

func (m *Trenameat) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.OldName, m.NewName); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.OldDirFID))
	b = appendStr(b, m.OldName)
	b = appendU32(b, uint32(m.NewDirFID))
	b = appendStr(b, m.NewName)
	return b, nil
}

func (m *Trenameat) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.OldDirFID = FID(d.u32())
	m.OldName = d.str()
	m.NewDirFID = FID(d.u32())
	m.NewName = d.str()
	return d.done()
}

// Rrenameat answers Trenameat.
type Rrenameat struct {
}

// Type implements Message.Type.
func (*Rrenameat) Type() MsgType { return TypeRrenameat }

func (*Rrenameat) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rrenameat) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Tunlinkat removes a directory entry.
type Tunlinkat struct {
	// DirFID is the directory.
	DirFID FID
	// Name is the entry.
	Name string
	// Flags is 0 or AT_REMOVEDIR (0x200).
	Flags uint32
}

// Type implements Message.Type.
func (*Tunlinkat) Type() MsgType { return TypeTunlinkat }

func (m *Tunlinkat) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Name); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.DirFID))
	b = appendStr(b, m.Name)
	b = appendU32(b, m.Flags)
	return b, nil
}

func (m *Tunlinkat) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.DirFID = FID(d.u32())
	m.Name = d.str()
	m.Flags = d.u32()
	return d.done()
}

// Runlinkat answers Tunlinkat.
type Runlinkat struct {
}

// Type implements Message.Type.
func (*Runlinkat) Type() MsgType { return TypeRunlinkat }

func (*Runlinkat) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Runlinkat) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Tversion negotiates the protocol version and message size.
type Tversion struct {
	// Msize is the largest frame the client will send or accept.
	Msize uint32
	// Version is the protocol version.
	Version string
}

// Type implements Message.Type.
func (*Tversion) Type() MsgType { return TypeTversion }

func (m *Tversion) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Version); err != nil {
		return b, err
	}
	b = appendU32(b, m.Msize)
	b = appendStr(b, m.Version)
	return b, nil
}

func (m *Tversion) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Msize = d.u32()
	m.Version = d.str()
	return d.done()
}

// Rversion answers Tversion.
type Rversion struct {
	// Msize is the negotiated message size.
	Msize uint32
	// Version is the version, or "unknown".
	Version string
}

// Type implements Message.Type.
func (*Rversion) Type() MsgType { return TypeRversion }

func (m *Rversion) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Version); err != nil {
		return b, err
	}
	b = appendU32(b, m.Msize)
	b = appendStr(b, m.Version)
	return b, nil
}

func (m *Rversion) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Msize = d.u32()
	m.Version = d.str()
	return d.done()
}

// Tauth asks for an authentication fid.
type Tauth struct {
	// Afid is the authentication fid.
	Afid FID
	// Uname is the user name.
	Uname string
	// Aname is the export.
	Aname string
	// NUname is the numeric user.
	NUname p9.UID
}

// Type implements Message.Type.
func (*Tauth) Type() MsgType { return TypeTauth }

func (m *Tauth) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Uname, m.Aname); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.Afid))
	b = appendStr(b, m.Uname)
	b = appendStr(b, m.Aname)
	b = appendU32(b, uint32(m.NUname))
	return b, nil
}

func (m *Tauth) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Afid = FID(d.u32())
	m.Uname = d.str()
	m.Aname = d.str()
	m.NUname = p9.UID(d.u32())
	return d.done()
}

// Rauth answers Tauth.
type Rauth struct {
	// QID is the authentication file.
	QID p9.QID
}

// Type implements Message.Type.
func (*Rauth) Type() MsgType { return TypeRauth }

func (m *Rauth) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	return b, nil
}

func (m *Rauth) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	return d.done()
}

// Tattach attaches a fid to the root of an export.
type Tattach struct {
	// FID is the new fid.
	FID FID
	// Afid is the authentication fid, NoFID for none.
	Afid FID
	// Uname is the user name.
	Uname string
	// Aname is the export.
	Aname string
	// NUname is the numeric user.
	NUname p9.UID
}

// Type implements Message.Type.
func (*Tattach) Type() MsgType { return TypeTattach }

func (m *Tattach) appendBody(b []byte) ([]byte, error) {
	if err := checkStrings(m.Uname, m.Aname); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, uint32(m.Afid))
	b = appendStr(b, m.Uname)
	b = appendStr(b, m.Aname)
	b = appendU32(b, uint32(m.NUname))
	return b, nil
}

func (m *Tattach) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Afid = FID(d.u32())
	m.Uname = d.str()
	m.Aname = d.str()
	m.NUname = p9.UID(d.u32())
	return d.done()
}

// Rattach answers Tattach.
type Rattach struct {
	// QID is the export's root.
	QID p9.QID
}

// Type implements Message.Type.
func (*Rattach) Type() MsgType { return TypeRattach }

func (m *Rattach) appendBody(b []byte) ([]byte, error) {
	b = appendQID(b, m.QID)
	return b, nil
}

func (m *Rattach) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.QID = d.qid()
	return d.done()
}

// Tflush asks that an outstanding request be answered before Rflush.
type Tflush struct {
	// OldTag is the request.
	OldTag Tag
}

// Type implements Message.Type.
func (*Tflush) Type() MsgType { return TypeTflush }

func (m *Tflush) appendBody(b []byte) ([]byte, error) {
	b = appendU16(b, uint16(m.OldTag))
	return b, nil
}

func (m *Tflush) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.OldTag = Tag(d.u16())
	return d.done()
}

// Rflush answers Tflush.
type Rflush struct {
}

// Type implements Message.Type.
func (*Rflush) Type() MsgType { return TypeRflush }

func (*Rflush) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rflush) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Tread reads from an open file.
type Tread struct {
	// FID is the open file.
	FID FID
	// Offset is the file offset.
	Offset uint64
	// Count is the most bytes to return.
	Count uint32
}

// Type implements Message.Type.
func (*Tread) Type() MsgType { return TypeTread }

func (m *Tread) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	b = appendU64(b, m.Offset)
	b = appendU32(b, m.Count)
	return b, nil
}

func (m *Tread) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	m.Offset = d.u64()
	m.Count = d.u32()
	return d.done()
}

// Rwrite answers Twrite.
type Rwrite struct {
	// Count is the bytes written.
	Count uint32
}

// Type implements Message.Type.
func (*Rwrite) Type() MsgType { return TypeRwrite }

func (m *Rwrite) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, m.Count)
	return b, nil
}

func (m *Rwrite) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Count = d.u32()
	return d.done()
}

// Tclunk forgets a fid.
type Tclunk struct {
	// FID is the fid.
	FID FID
}

// Type implements Message.Type.
func (*Tclunk) Type() MsgType { return TypeTclunk }

func (m *Tclunk) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	return b, nil
}

func (m *Tclunk) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	return d.done()
}

// Rclunk answers Tclunk.
type Rclunk struct {
}

// Type implements Message.Type.
func (*Rclunk) Type() MsgType { return TypeRclunk }

func (*Rclunk) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rclunk) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Tremove removes the file a fid names and forgets the fid.
type Tremove struct {
	// FID is the fid.
	FID FID
}

// Type implements Message.Type.
func (*Tremove) Type() MsgType { return TypeTremove }

func (m *Tremove) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	return b, nil
}

func (m *Tremove) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = FID(d.u32())
	return d.done()
}

// Rremove answers Tremove.
type Rremove struct {
}

// Type implements Message.Type.
func (*Rremove) Type() MsgType { return TypeRremove }

func (*Rremove) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rremove) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}

// Rfsync answers Tfsync.
type Rfsync struct {
}

// Type implements Message.Type.
func (*Rfsync) Type() MsgType { return TypeRfsync }

func (*Rfsync) appendBody(b []byte) ([]byte, error) {
	return b, nil
}

func (*Rfsync) decodeBody(body []byte) error {
	d := decoder{b: body}
	return d.done()
}
