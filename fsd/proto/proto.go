// Package proto is fsd's 9P2000.L wire codec: every T and R message the Linux
// v9fs client and hugelgupf/p9's client use, decoded from and encoded to
// byte frames.
//
// The codec reads untrusted bytes, so it is bounded by construction:
//
//   - Decoding works on one complete frame whose size the caller has already
//     bounded by the negotiated msize; nothing is allocated from a size read
//     off the wire beyond what the frame itself holds (a string of n bytes
//     is only copied after checking that n bytes are there, an array of n
//     elements grows only as elements are actually decoded).
//   - Every string and array is bounds-checked; a frame with bytes missing or
//     left over is an error (ErrShort, ErrTrailing); a walk of more than
//     MaxWalkElements names is an error (ErrTooManyNames).
//   - File modes are carried as the full 32-bit value in both directions
//     (Tlcreate, Tmkdir, Tmknod, Tsetattr): setuid, setgid and sticky bits
//     reach the attach point exactly as the client sent them.
//
// Encoding appends to a caller-provided buffer (Append), so a server can pool
// its buffers; Twrite and Rread payloads alias the frame they were decoded
// from instead of being copied.
//
// The p9 package's value types (p9.QID, p9.Attr, p9.AttrMask, p9.SetAttr,
// p9.FSStat, p9.Dirent, ...) are used for message fields because they are the
// attach-point contract of fsd's server.
package proto

import (
	"encoding/binary"
	"fmt"

	"github.com/pkg/errors"
)

// MsgType is the type byte of a 9P message.
type MsgType uint8

// Message types of 9P2000.L, with their numbers on the wire.
const (
	TypeRlerror      MsgType = 7
	TypeTstatfs      MsgType = 8
	TypeRstatfs      MsgType = 9
	TypeTlopen       MsgType = 12
	TypeRlopen       MsgType = 13
	TypeTlcreate     MsgType = 14
	TypeRlcreate     MsgType = 15
	TypeTsymlink     MsgType = 16
	TypeRsymlink     MsgType = 17
	TypeTmknod       MsgType = 18
	TypeRmknod       MsgType = 19
	TypeTrename      MsgType = 20
	TypeRrename      MsgType = 21
	TypeTreadlink    MsgType = 22
	TypeRreadlink    MsgType = 23
	TypeTgetattr     MsgType = 24
	TypeRgetattr     MsgType = 25
	TypeTsetattr     MsgType = 26
	TypeRsetattr     MsgType = 27
	TypeTxattrwalk   MsgType = 30
	TypeRxattrwalk   MsgType = 31
	TypeTxattrcreate MsgType = 32
	TypeRxattrcreate MsgType = 33
	TypeTreaddir     MsgType = 40
	TypeRreaddir     MsgType = 41
	TypeTfsync       MsgType = 50
	TypeRfsync       MsgType = 51
	TypeTlock        MsgType = 52
	TypeRlock        MsgType = 53
	TypeTgetlock     MsgType = 54
	TypeRgetlock     MsgType = 55
	TypeTlink        MsgType = 70
	TypeRlink        MsgType = 71
	TypeTmkdir       MsgType = 72
	TypeRmkdir       MsgType = 73
	TypeTrenameat    MsgType = 74
	TypeRrenameat    MsgType = 75
	TypeTunlinkat    MsgType = 76
	TypeRunlinkat    MsgType = 77
	TypeTversion     MsgType = 100
	TypeRversion     MsgType = 101
	TypeTauth        MsgType = 102
	TypeRauth        MsgType = 103
	TypeTattach      MsgType = 104
	TypeRattach      MsgType = 105
	TypeTflush       MsgType = 108
	TypeRflush       MsgType = 109
	TypeTwalk        MsgType = 110
	TypeRwalk        MsgType = 111
	TypeTread        MsgType = 116
	TypeRread        MsgType = 117
	TypeTwrite       MsgType = 118
	TypeRwrite       MsgType = 119
	TypeTclunk       MsgType = 120
	TypeRclunk       MsgType = 121
	TypeTremove      MsgType = 122
	TypeRremove      MsgType = 123
)

// Tag identifies an outstanding request on a connection.
type Tag uint16

// FID identifies a file on a connection.
type FID uint32

// Protocol constants.
const (
	// HeaderSize is the size of every frame's header: size[4] type[1] tag[2].
	HeaderSize = 7
	// NoTag is the tag of Tversion (P9_NOTAG).
	NoTag Tag = 0xFFFF
	// NoFID is the "no fid" value (P9_NOFID), e.g. Tattach's afid.
	NoFID FID = 0xFFFFFFFF
	// MaxWalkElements is the most names one Twalk may carry (and the most
	// QIDs one Rwalk may carry).
	MaxWalkElements = 16
	// QIDSize is the wire size of a QID: type[1] version[4] path[8].
	QIDSize = 13
	// IOHeaderSize is the fixed part of Rread and Rreaddir frames: the
	// header plus count[4]. A payload of msize-IOHeaderSize bytes fills a
	// frame of exactly msize.
	IOHeaderSize = HeaderSize + 4
	// TwriteHeaderSize is the fixed part of a Twrite frame: the header plus
	// fid[4] offset[8] count[4].
	TwriteHeaderSize = HeaderSize + 16
	// DirentFixedSize is the wire size of a directory entry without its
	// name: qid[13] offset[8] type[1] name-length[2].
	DirentFixedSize = QIDSize + 8 + 1 + 2
	// MaxStringLen is the longest string 9P can carry (a 16-bit length).
	MaxStringLen = 0xFFFF
	// Version is the protocol version string fsd speaks.
	Version = "9P2000.L"
	// VersionUnknown is the Rversion answer for a version not understood.
	VersionUnknown = "unknown"
)

// Decoding and encoding errors. Errors returned by this package satisfy
// errors.Is with one of these sentinels.
var (
	// ErrShort means the frame ends before the message does.
	ErrShort = errors.New("9p: message truncated")
	// ErrTrailing means bytes are left over after the message.
	ErrTrailing = errors.New("9p: trailing bytes after message")
	// ErrTooManyNames means a Twalk (or an Rwalk) carries more than
	// MaxWalkElements elements.
	ErrTooManyNames = errors.New("9p: more than 16 walk elements")
	// ErrUnknownType means the type byte names no 9P2000.L message.
	ErrUnknownType = errors.New("9p: unknown message type")
	// ErrFrameSize means the size field of a header is below HeaderSize or
	// does not match the frame handed to Decode.
	ErrFrameSize = errors.New("9p: bad frame size")
	// ErrStringTooLong means a string to encode exceeds MaxStringLen.
	ErrStringTooLong = errors.New("9p: string longer than 65535 bytes")
	// ErrPayloadTooLong means a Twrite or Rread payload to encode exceeds
	// what a 32-bit count can describe.
	ErrPayloadTooLong = errors.New("9p: payload longer than 4 GiB")
)

var typeNames = map[MsgType]string{
	TypeRlerror: "Rlerror", TypeTstatfs: "Tstatfs", TypeRstatfs: "Rstatfs",
	TypeTlopen: "Tlopen", TypeRlopen: "Rlopen", TypeTlcreate: "Tlcreate",
	TypeRlcreate: "Rlcreate", TypeTsymlink: "Tsymlink", TypeRsymlink: "Rsymlink",
	TypeTmknod: "Tmknod", TypeRmknod: "Rmknod", TypeTrename: "Trename",
	TypeRrename: "Rrename", TypeTreadlink: "Treadlink", TypeRreadlink: "Rreadlink",
	TypeTgetattr: "Tgetattr", TypeRgetattr: "Rgetattr", TypeTsetattr: "Tsetattr",
	TypeRsetattr: "Rsetattr", TypeTxattrwalk: "Txattrwalk", TypeRxattrwalk: "Rxattrwalk",
	TypeTxattrcreate: "Txattrcreate", TypeRxattrcreate: "Rxattrcreate",
	TypeTreaddir: "Treaddir", TypeRreaddir: "Rreaddir", TypeTfsync: "Tfsync",
	TypeRfsync: "Rfsync", TypeTlock: "Tlock", TypeRlock: "Rlock",
	TypeTgetlock: "Tgetlock", TypeRgetlock: "Rgetlock", TypeTlink: "Tlink",
	TypeRlink: "Rlink", TypeTmkdir: "Tmkdir", TypeRmkdir: "Rmkdir",
	TypeTrenameat: "Trenameat", TypeRrenameat: "Rrenameat", TypeTunlinkat: "Tunlinkat",
	TypeRunlinkat: "Runlinkat", TypeTversion: "Tversion", TypeRversion: "Rversion",
	TypeTauth: "Tauth", TypeRauth: "Rauth", TypeTattach: "Tattach",
	TypeRattach: "Rattach", TypeTflush: "Tflush", TypeRflush: "Rflush",
	TypeTwalk: "Twalk", TypeRwalk: "Rwalk", TypeTread: "Tread", TypeRread: "Rread",
	TypeTwrite: "Twrite", TypeRwrite: "Rwrite", TypeTclunk: "Tclunk",
	TypeRclunk: "Rclunk", TypeTremove: "Tremove", TypeRremove: "Rremove",
}

// String returns the message name ("Twalk"), or "type N" for an unknown type.
func (t MsgType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Known reports whether t is a 9P2000.L message this package codes.
func (t MsgType) Known() bool {
	_, ok := typeNames[t]
	return ok
}

// Header is the decoded 7-byte header of a frame.
type Header struct {
	// Size is the size of the whole frame, header included.
	Size uint32
	// Type is the message type.
	Type MsgType
	// Tag is the request tag.
	Tag Tag
}

// ParseHeader decodes the header at the start of b. It fails with ErrShort
// when b holds fewer than HeaderSize bytes and with ErrFrameSize when the
// size field is below HeaderSize. It does not check the size against any
// msize: that is the reader's job, before it allocates.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, errors.WithMessagef(ErrShort, "header of %d bytes", len(b))
	}
	h := Header{
		Size: binary.LittleEndian.Uint32(b),
		Type: MsgType(b[4]),
		Tag:  Tag(binary.LittleEndian.Uint16(b[5:])),
	}
	if h.Size < HeaderSize {
		return h, errors.WithMessagef(ErrFrameSize, "size field %d is below the %d-byte header", h.Size, HeaderSize)
	}
	return h, nil
}

// PutHeader writes a header into b[:HeaderSize].
func PutHeader(b []byte, size uint32, t MsgType, tag Tag) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint32(b, size)
	b[4] = byte(t)
	binary.LittleEndian.PutUint16(b[5:], uint16(tag))
}

// Message is a decoded 9P2000.L message. The set of implementations is
// closed: every type in this package whose name starts with T or R.
type Message interface {
	// Type returns the message type.
	Type() MsgType
	// appendBody appends the wire form of the message body.
	appendBody(b []byte) ([]byte, error)
	// decodeBody replaces every field from body (the frame after its
	// header).
	decodeBody(body []byte) error
}

// Append appends the frame for m with tag to b and returns the extended
// buffer. On error b is returned unchanged (its length; bytes past it may
// have been written).
func Append(b []byte, tag Tag, m Message) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0)
	out, err := m.appendBody(b)
	if err != nil {
		return b[:start], errors.WithMessagef(err, "encode %v", m.Type())
	}
	size := len(out) - start
	if uint64(size) > 0xFFFFFFFF {
		return b[:start], errors.WithMessagef(ErrPayloadTooLong, "encode %v", m.Type())
	}
	PutHeader(out[start:], uint32(size), m.Type(), tag)
	return out, nil
}

// DecodeBody decodes body, the frame after its header, into m, replacing
// every field of m. Slices in m may keep their capacity across calls. Twrite
// and Rread data alias body.
func DecodeBody(body []byte, m Message) error {
	if err := m.decodeBody(body); err != nil {
		return errors.WithMessagef(err, "decode %v", m.Type())
	}
	return nil
}

// Decode decodes one complete frame into a newly allocated message. The
// frame's size field must equal len(frame). Twrite and Rread data alias
// frame.
func Decode(frame []byte) (Tag, Message, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return 0, nil, err
	}
	if int64(h.Size) != int64(len(frame)) {
		return h.Tag, nil, errors.WithMessagef(ErrFrameSize, "size field %d, frame of %d bytes", h.Size, len(frame))
	}
	m := New(h.Type)
	if m == nil {
		return h.Tag, nil, errors.WithMessagef(ErrUnknownType, "type %d", uint8(h.Type))
	}
	if err := DecodeBody(frame[HeaderSize:], m); err != nil {
		return h.Tag, nil, err
	}
	return h.Tag, m, nil
}

// New returns a new zero message of type t, or nil when t is unknown.
func New(t MsgType) Message {
	switch t {
	case TypeRlerror:
		return &Rlerror{}
	case TypeTstatfs:
		return &Tstatfs{}
	case TypeRstatfs:
		return &Rstatfs{}
	case TypeTlopen:
		return &Tlopen{}
	case TypeRlopen:
		return &Rlopen{}
	case TypeTlcreate:
		return &Tlcreate{}
	case TypeRlcreate:
		return &Rlcreate{}
	case TypeTsymlink:
		return &Tsymlink{}
	case TypeRsymlink:
		return &Rsymlink{}
	case TypeTmknod:
		return &Tmknod{}
	case TypeRmknod:
		return &Rmknod{}
	case TypeTrename:
		return &Trename{}
	case TypeRrename:
		return &Rrename{}
	case TypeTreadlink:
		return &Treadlink{}
	case TypeRreadlink:
		return &Rreadlink{}
	case TypeTgetattr:
		return &Tgetattr{}
	case TypeRgetattr:
		return &Rgetattr{}
	case TypeTsetattr:
		return &Tsetattr{}
	case TypeRsetattr:
		return &Rsetattr{}
	case TypeTxattrwalk:
		return &Txattrwalk{}
	case TypeRxattrwalk:
		return &Rxattrwalk{}
	case TypeTxattrcreate:
		return &Txattrcreate{}
	case TypeRxattrcreate:
		return &Rxattrcreate{}
	case TypeTreaddir:
		return &Treaddir{}
	case TypeRreaddir:
		return &Rreaddir{}
	case TypeTfsync:
		return &Tfsync{}
	case TypeRfsync:
		return &Rfsync{}
	case TypeTlock:
		return &Tlock{}
	case TypeRlock:
		return &Rlock{}
	case TypeTgetlock:
		return &Tgetlock{}
	case TypeRgetlock:
		return &Rgetlock{}
	case TypeTlink:
		return &Tlink{}
	case TypeRlink:
		return &Rlink{}
	case TypeTmkdir:
		return &Tmkdir{}
	case TypeRmkdir:
		return &Rmkdir{}
	case TypeTrenameat:
		return &Trenameat{}
	case TypeRrenameat:
		return &Rrenameat{}
	case TypeTunlinkat:
		return &Tunlinkat{}
	case TypeRunlinkat:
		return &Runlinkat{}
	case TypeTversion:
		return &Tversion{}
	case TypeRversion:
		return &Rversion{}
	case TypeTauth:
		return &Tauth{}
	case TypeRauth:
		return &Rauth{}
	case TypeTattach:
		return &Tattach{}
	case TypeRattach:
		return &Rattach{}
	case TypeTflush:
		return &Tflush{}
	case TypeRflush:
		return &Rflush{}
	case TypeTwalk:
		return &Twalk{}
	case TypeRwalk:
		return &Rwalk{}
	case TypeTread:
		return &Tread{}
	case TypeRread:
		return &Rread{}
	case TypeTwrite:
		return &Twrite{}
	case TypeRwrite:
		return &Rwrite{}
	case TypeTclunk:
		return &Tclunk{}
	case TypeRclunk:
		return &Rclunk{}
	case TypeTremove:
		return &Tremove{}
	case TypeRremove:
		return &Rremove{}
	}
	return nil
}
