package bench

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// unixPair returns two connected unix stream sockets.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// frame builds a 9P frame of type typ, tag 1, with body.
func frame(typ byte, body ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0)
	b = append(b, typ, 1, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	return b
}

func str9(s string) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestDialectRewrite(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 3*copyLimit+5)
	tests := []struct {
		name   string
		in     []byte
		pieces []int // how the client splits its write (p9 writes header, body, payload)
		want   []byte
	}{
		// p9's client asks for its Google extension first; diod refuses it.
		{"Tversion Google.7 becomes plain 9P2000.L",
			frame(msgTversion, u32(65536), str9("9P2000.L.Google.7")), []int{7},
			frame(msgTversion, u32(65536), str9("9P2000.L"))},
		// A plain version is left alone.
		{"Tversion plain unchanged",
			frame(msgTversion, u32(8192), str9("9P2000.L")), []int{7},
			frame(msgTversion, u32(8192), str9("9P2000.L"))},
		// Another protocol's version must not be turned into 9P2000.L.
		{"Tversion 9P2000.u unchanged",
			frame(msgTversion, u32(8192), str9("9P2000.u")), []int{7},
			frame(msgTversion, u32(8192), str9("9P2000.u"))},
		// "No uid" becomes the real uid (diod looks it up).
		{"Tattach n_uname set",
			frame(msgTattach, u32(1), u32(^uint32(0)), str9(""), str9("/export"), u32(^uint32(0))), []int{7},
			frame(msgTattach, u32(1), u32(^uint32(0)), str9(""), str9("/export"), u32(4242))},
		// Tlcreate's "no gid" becomes the creating group.
		{"Tlcreate no gid set",
			frame(msgTlcreate, u32(2), str9("f"), u32(1), u32(0o644), u32(^uint32(0))), []int{7},
			frame(msgTlcreate, u32(2), str9("f"), u32(1), u32(0o644), u32(77))},
		// An explicit gid is the client's choice and stays.
		{"Tlcreate explicit gid kept",
			frame(msgTlcreate, u32(2), str9("f"), u32(1), u32(0o644), u32(5)), []int{7},
			frame(msgTlcreate, u32(2), str9("f"), u32(1), u32(0o644), u32(5))},
		// Everything else passes through byte for byte.
		{"Twalk passes through",
			frame(110, u32(1), u32(2), []byte{1, 0}, str9("file")), []int{7},
			frame(110, u32(1), u32(2), []byte{1, 0}, str9("file"))},
		// A Twrite's large payload is sent from the caller's slice, intact.
		{"Twrite large payload intact",
			frame(118, u32(3), make([]byte, 8), u32(uint32(len(big))), big), []int{7, 16},
			frame(118, u32(3), make([]byte, 8), u32(uint32(len(big))), big)},
		// A frame written a byte at a time still leaves as one frame.
		{"byte-at-a-time header",
			frame(120, u32(9)), []int{1, 1, 1, 1, 1, 1, 1},
			frame(120, u32(9))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := unixPair(t)
			c := newDialectConn(a, 4242, 77)
			in := tc.in
			for _, n := range tc.pieces {
				if _, err := c.Write(in[:n]); err != nil {
					t.Fatal(err)
				}
				in = in[n:]
			}
			if _, err := c.Write(in); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(b, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("sent %x\nwant %x", got, tc.want)
			}
		})
	}
}

// Two frames in one Write leave as two frames, each rewritten on its own.
func TestDialectTwoFramesInOneWrite(t *testing.T) {
	a, b := unixPair(t)
	c := newDialectConn(a, 1, 2)
	f1 := frame(msgTversion, u32(1024), str9("9P2000.L.Google.3"))
	f2 := frame(120, u32(9))
	if _, err := c.Write(append(append([]byte(nil), f1...), f2...)); err != nil {
		t.Fatal(err)
	}
	want := append(frame(msgTversion, u32(1024), str9("9P2000.L")), f2...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("sent %x\nwant %x", got, want)
	}
}

// A frame whose size field is impossible is refused, not sent.
func TestDialectRejectsBadSize(t *testing.T) {
	a, _ := unixPair(t)
	c := newDialectConn(a, 1, 2)
	bad := []byte{3, 0, 0, 0, 100, 1, 0}
	if _, err := c.Write(bad); !errorsIs(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}
