package conformance

import (
	"bytes"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

// TestCodec checks the raw helper's little-endian framing against bytes
// written out by hand from the 9P2000.L wire format.
func TestCodec(t *testing.T) {
	for _, row := range []struct {
		name  string
		build func(e *enc)
		want  []byte
	}{
		{"u8", func(e *enc) { e.u8(0xab) }, []byte{0xab}},
		{"u16", func(e *enc) { e.u16(0x1234) }, []byte{0x34, 0x12}},
		{"u32", func(e *enc) { e.u32(0x01020304) }, []byte{4, 3, 2, 1}},
		{"u64", func(e *enc) { e.u64(0x0102030405060708) }, []byte{8, 7, 6, 5, 4, 3, 2, 1}},
		{"string", func(e *enc) { e.str("ab") }, []byte{2, 0, 'a', 'b'}},
		{"empty-string", func(e *enc) { e.str("") }, []byte{0, 0}},
	} {
		t.Run(row.name, func(t *testing.T) {
			var e enc
			row.build(&e)
			if !bytes.Equal(e, row.want) {
				t.Errorf("encoded % x, want % x", []byte(e), row.want)
			}
		})
	}
	// A QID and a string decode back; reading past the end is flagged.
	d := dec{b: []byte{0x80, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 3, 0, 'x', 'y', 'z'}}
	if q := d.qid(); q != (p9.QID{Type: p9.TypeDir, Version: 1, Path: 9}) {
		t.Errorf("qid %v", q)
	}
	if s := d.str(); s != "xyz" || d.short {
		t.Errorf("string %q short %v", s, d.short)
	}
	if d.u32(); !d.short {
		t.Errorf("reading past the end was not flagged")
	}
}
