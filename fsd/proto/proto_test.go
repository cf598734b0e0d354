package proto

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from seedMessages")

var (
	qidDir  = p9.QID{Type: p9.TypeDir, Version: 7, Path: 0x0102030405060708}
	qidFile = p9.QID{Type: p9.TypeRegular, Version: math.MaxUint32, Path: math.MaxUint64}
	allAttr = p9.Attr{
		Mode: p9.ModeRegular | 07755, UID: 1000, GID: 1001, NLink: 3, RDev: 0x0801,
		Size: 1 << 40, BlockSize: 4096, Blocks: 99,
		ATimeSeconds: 1, ATimeNanoSeconds: 2, MTimeSeconds: 3, MTimeNanoSeconds: 4,
		CTimeSeconds: 5, CTimeNanoSeconds: 6, BTimeSeconds: 7, BTimeNanoSeconds: 8,
		Gen: 9, DataVersion: 10,
	}
)

// seedMessages is one populated message of every type, each chosen to
// exercise something particular; the comment on each says what.
func seedMessages() []struct {
	name string
	tag  Tag
	msg  Message
} {
	type row = struct {
		name string
		tag  Tag
		msg  Message
	}
	return []row{
		// Version negotiation uses NoTag and a Google suffix the server folds.
		{"Tversion", NoTag, &Tversion{Msize: 1 << 20, Version: "9P2000.L.Google.7"}},
		{"Rversion", NoTag, &Rversion{Msize: 65536, Version: Version}},
		{"Tauth", 1, &Tauth{Afid: 5, Uname: "root", Aname: "/", NUname: 0}},
		{"Rauth", 1, &Rauth{QID: qidFile}},
		// Attach with no afid and the "no uid" sentinel p9's client sends.
		{"Tattach", 2, &Tattach{FID: 1, Afid: NoFID, Uname: "", Aname: "data", NUname: p9.NoUID}},
		{"Rattach", 2, &Rattach{QID: qidDir}},
		{"Tflush", 3, &Tflush{OldTag: 2}},
		{"Rflush", 3, &Rflush{}},
		// A walk of exactly MaxWalkElements names is the longest allowed.
		{"Twalk", 4, &Twalk{FID: 1, NewFID: 2, Names: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"}}},
		// A clone (no names) decodes with nil Names.
		{"Twalk/clone", 4, &Twalk{FID: 1, NewFID: 1}},
		{"Rwalk", 4, &Rwalk{QIDs: []p9.QID{qidDir, qidFile}}},
		{"Tread", 5, &Tread{FID: 2, Offset: math.MaxUint64, Count: 8192}},
		{"Rread", 5, &Rread{Data: []byte("hello, world")}},
		// An empty read is a valid end-of-file reply.
		{"Rread/empty", 5, &Rread{Data: []byte{}}},
		{"Twrite", 6, &Twrite{FID: 2, Offset: 4096, Data: []byte{0, 1, 2, 0xff}}},
		{"Rwrite", 6, &Rwrite{Count: 4}},
		{"Tclunk", 7, &Tclunk{FID: 2}},
		{"Rclunk", 7, &Rclunk{}},
		{"Tremove", 8, &Tremove{FID: 3}},
		{"Rremove", 8, &Rremove{}},
		// ENOTEMPTY travels as itself (p9's ExtractErrno would say EEXIST).
		{"Rlerror", 9, &Rlerror{Ecode: 39}},
		{"Tstatfs", 10, &Tstatfs{FID: 1}},
		{"Rstatfs", 10, &Rstatfs{Stat: p9.FSStat{Type: 0x01021997, BlockSize: 4096, Blocks: 1, BlocksFree: 2, BlocksAvailable: 3, Files: 4, FilesFree: 5, FSID: 6, NameLength: 255}}},
		// Open flags travel unfiltered in the codec; the server masks them.
		{"Tlopen", 11, &Tlopen{FID: 2, Flags: p9.ReadWrite | 0o1000 | 0o100}},
		{"Rlopen", 11, &Rlopen{QID: qidFile, IOUnit: 65536}},
		// setuid|setgid|sticky survive in a create mode.
		{"Tlcreate", 12, &Tlcreate{FID: 1, Name: "new", Flags: p9.WriteOnly, Mode: 07755, GID: 100}},
		{"Rlcreate", 12, &Rlcreate{QID: qidFile, IOUnit: 0}},
		{"Tsymlink", 13, &Tsymlink{FID: 1, Name: "link", Target: "../../etc/passwd", GID: p9.NoGID}},
		{"Rsymlink", 13, &Rsymlink{QID: qidFile}},
		// A mknod mode carries the file type bits as well as setuid.
		{"Tmknod", 14, &Tmknod{DirFID: 1, Name: "fifo", Mode: p9.ModeNamedPipe | 04644, Major: 8, Minor: 1, GID: 0}},
		{"Rmknod", 14, &Rmknod{QID: qidFile}},
		{"Trename", 15, &Trename{FID: 3, DirFID: 1, Name: "renamed"}},
		{"Rrename", 15, &Rrename{}},
		{"Treadlink", 16, &Treadlink{FID: 3}},
		{"Rreadlink", 16, &Rreadlink{Target: "/target with spaces"}},
		// Every getattr bit the p9 mask can express.
		{"Tgetattr", 17, &Tgetattr{FID: 1, Mask: p9.AttrMaskAll}},
		{"Rgetattr", 17, &Rgetattr{Valid: p9.AttrMaskAll, QID: qidFile, Attr: allAttr}},
		// chmod 04755 keeps its setuid bit (p9's codec masks it to 0755).
		{"Tsetattr", 18, &Tsetattr{FID: 1, Valid: p9.SetAttrMask{Permissions: true, UID: true, GID: true, Size: true, ATime: true, MTime: true, CTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true}, Attr: p9.SetAttr{Permissions: 04755, UID: 1, GID: 2, Size: 3, ATimeSeconds: 4, ATimeNanoSeconds: 5, MTimeSeconds: 6, MTimeNanoSeconds: 7}}},
		{"Rsetattr", 18, &Rsetattr{}},
		// An empty xattr name asks for the list of names.
		{"Txattrwalk", 19, &Txattrwalk{FID: 1, NewFID: 9, Name: ""}},
		{"Rxattrwalk", 19, &Rxattrwalk{Size: 65536}},
		// XATTR_REPLACE with size 0 is how Linux removes an attribute.
		{"Txattrcreate", 20, &Txattrcreate{FID: 9, Name: "user.k", Size: 0, Flags: 2}},
		{"Rxattrcreate", 20, &Rxattrcreate{}},
		{"Treaddir", 21, &Treaddir{FID: 2, Offset: 12345, Count: 4096 - IOHeaderSize}},
		{"Rreaddir", 21, &Rreaddir{Entries: []p9.Dirent{{QID: qidDir, Offset: 1, Type: p9.TypeDir, Name: "."}, {QID: qidFile, Offset: math.MaxUint64, Type: p9.TypeRegular, Name: "file"}}}},
		// Linux sends datasync; p9's client omits it (see the wire test).
		{"Tfsync", 22, &Tfsync{FID: 2, Datasync: 1}},
		{"Rfsync", 22, &Rfsync{}},
		// A blocking write lock over the whole file from pid -1.
		{"Tlock", 23, &Tlock{FID: 2, LockType: p9.WriteLock, Flags: p9.LockFlagsBlock, Start: 0, Length: 0, ProcID: -1, ClientID: "guest"}},
		{"Rlock", 23, &Rlock{Status: p9.LockStatusBlocked}},
		{"Tgetlock", 24, &Tgetlock{FID: 2, LockType: p9.ReadLock, Start: 10, Length: 20, ProcID: 42, ClientID: "guest"}},
		{"Rgetlock", 24, &Rgetlock{LockType: p9.Unlock, Start: 10, Length: 20, ProcID: 42, ClientID: "guest"}},
		{"Tlink", 25, &Tlink{DirFID: 1, FID: 3, Name: "hard"}},
		{"Rlink", 25, &Rlink{}},
		// setgid on a directory is inherited by its children: it must survive.
		{"Tmkdir", 26, &Tmkdir{DirFID: 1, Name: "dir", Mode: 02775, GID: 50}},
		{"Rmkdir", 26, &Rmkdir{QID: qidDir}},
		{"Trenameat", 27, &Trenameat{OldDirFID: 1, OldName: "a", NewDirFID: 4, NewName: "b"}},
		{"Rrenameat", 27, &Rrenameat{}},
		// AT_REMOVEDIR.
		{"Tunlinkat", 28, &Tunlinkat{DirFID: 1, Name: "dir", Flags: 0x200}},
		{"Runlinkat", 28, &Runlinkat{}},
	}
}

// TestRoundTrip proves encode then decode gives back every field of every
// message, and that the frame's size field is its length.
func TestRoundTrip(t *testing.T) {
	seen := map[MsgType]bool{}
	for _, tc := range seedMessages() {
		t.Run(tc.name, func(t *testing.T) {
			frame, err := Append([]byte("prefix"), tc.tag, tc.msg)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.HasPrefix(frame, []byte("prefix")) {
				t.Fatalf("Append clobbered the buffer it appends to")
			}
			frame = frame[len("prefix"):]
			h, err := ParseHeader(frame)
			if err != nil || int(h.Size) != len(frame) || h.Type != tc.msg.Type() || h.Tag != tc.tag {
				t.Fatalf("header %+v (err %v) for a %d-byte %v frame", h, err, len(frame), tc.msg.Type())
			}
			tag, got, err := Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tag != tc.tag || !reflect.DeepEqual(got, tc.msg) {
				t.Fatalf("round trip:\n got %d %#v\nwant %d %#v", tag, got, tc.tag, tc.msg)
			}
		})
		seen[tc.msg.Type()] = true
	}
	for typ := range typeNames {
		if !seen[typ] {
			t.Errorf("no round-trip row for %v", typ)
		}
	}
}

// frame builds a raw frame from a type, a tag and body bytes, with a correct
// size field.
func frame(typ MsgType, tag Tag, body ...[]byte) []byte {
	b := make([]byte, HeaderSize)
	for _, p := range body {
		b = append(b, p...)
	}
	PutHeader(b, uint32(len(b)), typ, tag)
	return b
}

func u16(v uint16) []byte { return le.AppendUint16(nil, v) }
func u32(v uint32) []byte { return le.AppendUint32(nil, v) }
func u64(v uint64) []byte { return le.AppendUint64(nil, v) }
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }

// TestDecodeRejects is the hostile-input table: each row is a frame a
// client could send and the error the decoder must give, without panicking.
func TestDecodeRejects(t *testing.T) {
	seventeen := [][]byte{u32(1), u32(2), u16(17)}
	for i := 0; i < 17; i++ {
		seventeen = append(seventeen, str("x"))
	}
	tooLong := frame(TypeTversion, NoTag, u32(8192), str("9P2000.L"))
	tooLong = append(tooLong, 0) // one byte more than the size field says
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		// Fewer bytes than a header.
		{"short header", []byte{9, 0, 0}, ErrShort},
		// A size field below the header size can never be a frame.
		{"size below header", []byte{3, 0, 0, 0, 100, 0, 0}, ErrFrameSize},
		// The size field must describe exactly the frame handed over.
		{"size mismatch", tooLong, ErrFrameSize},
		// A type byte that names no 9P2000.L message.
		{"unknown type", frame(MsgType(99), 1, u32(1)), ErrUnknownType},
		// Tversion's string claims more bytes than the frame holds.
		{"string past end", frame(TypeTversion, NoTag, u32(8192), u16(500), []byte("9P")), ErrShort},
		// A walk of 17 names is one too many.
		{"walk of 17 names", frame(TypeTwalk, 1, seventeen...), ErrTooManyNames},
		// nwname 65535 is refused before any name is read or allocated.
		{"walk of 65535 names", frame(TypeTwalk, 1, u32(1), u32(2), u16(0xFFFF)), ErrTooManyNames},
		// Rwalk is bounded like Twalk.
		{"rwalk of 17 qids", frame(TypeRwalk, 1, u16(17)), ErrTooManyNames},
		// A Twrite count larger than the payload present.
		{"write count past end", frame(TypeTwrite, 1, u32(1), u64(0), u32(0xFFFFFFFF), []byte("abc")), ErrShort},
		// A Twrite with bytes after the payload its count describes.
		{"write trailing", frame(TypeTwrite, 1, u32(1), u64(0), u32(1), []byte("ab")), ErrTrailing},
		// Tclunk is exactly four bytes.
		{"clunk trailing", frame(TypeTclunk, 1, u32(1), []byte{0}), ErrTrailing},
		// Tclunk cut short.
		{"clunk short", frame(TypeTclunk, 1, []byte{1, 0}), ErrShort},
		// Tattach without the n_uname field 9P2000.L requires.
		{"attach without n_uname", frame(TypeTattach, 1, u32(1), u32(uint32(NoFID)), str("u"), str("")), ErrShort},
		// Tfsync with a partial datasync field.
		{"fsync partial datasync", frame(TypeTfsync, 1, u32(1), []byte{1, 0}), ErrShort},
		// Rreaddir whose entries stop in the middle of one.
		{"readdir partial entry", frame(TypeRreaddir, 1, u32(5), []byte{1, 2, 3, 4, 5}), ErrShort},
		// Rreaddir whose count exceeds the frame.
		{"readdir count past end", frame(TypeRreaddir, 1, u32(0xFFFFFFFF)), ErrShort},
		// Tlock client id longer than the frame.
		{"lock client past end", frame(TypeTlock, 1, u32(1), []byte{1}, u32(0), u64(0), u64(0), u32(0), u16(10)), ErrShort},
		// Tsetattr missing its last timestamp.
		{"setattr short", frame(TypeTsetattr, 1, u32(1), u32(1), u32(0o644), u32(0), u32(0), u64(0), u64(0), u64(0), u64(0)), ErrShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, m, err := Decode(tc.frame)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %#v, %v; want %v", m, err, tc.want)
			}
			if m != nil {
				t.Fatalf("Decode returned a message with an error: %#v", m)
			}
		})
	}
}

// TestDecodeAllocationIsBounded proves that size fields read off the wire do
// not drive allocation: frames that claim huge strings, arrays and payloads
// but hold a few bytes allocate almost nothing.
func TestDecodeAllocationIsBounded(t *testing.T) {
	hostile := [][]byte{
		frame(TypeTwalk, 1, u32(1), u32(2), u16(0xFFFF)),
		frame(TypeTwrite, 1, u32(1), u64(0), u32(0xFFFFFFFF)),
		frame(TypeRreaddir, 1, u32(0xFFFFFFFF)),
		frame(TypeTversion, 1, u32(1), u16(0xFFFF)),
		frame(TypeRread, 1, u32(0xFFFFFFFF), []byte("x")),
	}
	var tw Twalk
	var before, after runtime.MemStats
	const rounds = 1000
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < rounds; i++ {
		for _, f := range hostile {
			if _, _, err := Decode(f); err == nil {
				t.Fatalf("hostile frame %x decoded", f)
			}
		}
		_ = DecodeBody(hostile[0][HeaderSize:], &tw)
	}
	runtime.ReadMemStats(&after)
	perFrame := float64(after.TotalAlloc-before.TotalAlloc) / (rounds * float64(len(hostile)+1))
	// Decode allocates the message struct and an error; a 64 KiB string or a
	// 4 GiB payload would show up as kilobytes per frame.
	if perFrame > 1024 {
		t.Fatalf("%.0f bytes allocated per hostile frame", perFrame)
	}
}

// TestFullModeBitsOnTheWire proves the mode fields are written as 32 bits
// exactly as given (p9's encoder masks Tlcreate/Tmkdir/Tsetattr modes with
// 01777), by looking at the bytes rather than round-tripping.
func TestFullModeBitsOnTheWire(t *testing.T) {
	const mode = 0o107755 // regular file, setuid+setgid+sticky, rwxr-xr-x
	tests := []struct {
		name string
		msg  Message
		at   int // offset of the mode in the body
	}{
		// Tlcreate: fid[4] name[s] flags[4] mode[4].
		{"Tlcreate", &Tlcreate{FID: 1, Name: "f", Mode: mode}, 4 + 3 + 4},
		// Tmkdir: dfid[4] name[s] mode[4].
		{"Tmkdir", &Tmkdir{DirFID: 1, Name: "d", Mode: mode}, 4 + 3},
		// Tmknod: dfid[4] name[s] mode[4].
		{"Tmknod", &Tmknod{DirFID: 1, Name: "n", Mode: mode}, 4 + 3},
		// Tsetattr: fid[4] valid[4] mode[4].
		{"Tsetattr", &Tsetattr{FID: 1, Valid: p9.SetAttrMask{Permissions: true}, Attr: p9.SetAttr{Permissions: mode}}, 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Append(nil, 1, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := le.Uint32(b[HeaderSize+tc.at:]); got != mode {
				t.Fatalf("mode on the wire %#o, want %#o", got, mode)
			}
		})
	}
}

// TestEncodeRejects proves encoding refuses what the wire cannot carry
// instead of writing a corrupt frame.
func TestEncodeRejects(t *testing.T) {
	long := strings.Repeat("x", MaxStringLen+1)
	tests := []struct {
		name string
		msg  Message
		want error
	}{
		// A name longer than a 16-bit length can describe.
		{"long walk name", &Twalk{Names: []string{long}}, ErrStringTooLong},
		// A readlink target longer than 65535 bytes.
		{"long readlink", &Rreadlink{Target: long}, ErrStringTooLong},
		// A directory entry with an unencodable name.
		{"long dirent", &Rreaddir{Entries: []p9.Dirent{{Name: long}}}, ErrStringTooLong},
		// Seventeen names.
		{"walk of 17", &Twalk{Names: make([]string, 17)}, ErrTooManyNames},
		// Seventeen QIDs.
		{"rwalk of 17", &Rwalk{QIDs: make([]p9.QID, 17)}, ErrTooManyNames},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Append([]byte("keep"), 1, tc.msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Append error %v, want %v", err, tc.want)
			}
			if string(b) != "keep" {
				t.Fatalf("Append left %q after failing", b)
			}
		})
	}
}

// TestMaskBits proves the getattr and setattr mask conversions are exact
// inverses over every bit the p9 types can express.
func TestMaskBits(t *testing.T) {
	for bit := uint64(1); bit <= getattrDataVersion; bit <<= 1 {
		if got := AttrMaskBits(AttrMaskFromBits(bit)); got != bit {
			t.Errorf("getattr bit %#x round-trips to %#x", bit, got)
		}
	}
	if got := AttrMaskBits(p9.AttrMaskAll); got != 0x3fff {
		t.Errorf("AttrMaskAll = %#x, want 0x3fff", got)
	}
	for bit := uint32(1); bit <= setattrMtimeSet; bit <<= 1 {
		if got := SetAttrMaskBits(SetAttrMaskFromBits(bit)); got != bit {
			t.Errorf("setattr bit %#x round-trips to %#x", bit, got)
		}
	}
}

// TestSeedCorpus checks the committed fuzz seed corpus: every file decodes,
// and every T message is present (so the fuzzer starts from valid frames of
// every request a client can send). Run with -update-corpus to rewrite it.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tc := range seedMessages() {
			b, err := Append(nil, tc.tag, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			name := "seed-" + strings.ReplaceAll(tc.name, "/", "-")
			content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("seed corpus: %v", err)
	}
	covered := map[MsgType]bool{}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		data, err := parseCorpusFile(raw)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		_, m, err := Decode(data)
		if err != nil {
			t.Fatalf("%s does not decode: %v", e.Name(), err)
		}
		covered[m.Type()] = true
	}
	for typ, name := range typeNames {
		if strings.HasPrefix(name, "T") && !covered[typ] {
			t.Errorf("seed corpus has no %v frame", typ)
		}
	}
}

// parseCorpusFile reads the single []byte value of a "go test fuzz v1" file.
func parseCorpusFile(raw []byte) ([]byte, error) {
	lines := strings.SplitN(strings.TrimSpace(string(raw)), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		return nil, fmt.Errorf("not a go test fuzz v1 file")
	}
	v := strings.TrimSpace(lines[1])
	if !strings.HasPrefix(v, "[]byte(") || !strings.HasSuffix(v, ")") {
		return nil, fmt.Errorf("not a []byte value: %q", v)
	}
	s, err := strconv.Unquote(v[len("[]byte(") : len(v)-1])
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}
