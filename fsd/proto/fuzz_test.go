package proto

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary frames to Decode. Decoding must never panic,
// and whatever decodes must survive a round trip: encode(decode(f)) decodes
// to the same message, and encoding that again gives the same bytes.
//
// The seed corpus (testdata/fuzz/FuzzDecode) holds a valid frame of every T
// message; TestSeedCorpus keeps it complete.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		tag, m, err := Decode(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned a message and an error")
			}
			return
		}
		enc, err := Append(nil, tag, m)
		if err != nil {
			t.Fatalf("a decoded %v does not encode: %v", m.Type(), err)
		}
		tag2, m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded %v does not decode: %v", m.Type(), err)
		}
		if tag2 != tag || !reflect.DeepEqual(m2, m) {
			t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", m2, m)
		}
		enc2, err := Append(nil, tag2, m2)
		if err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not stable: % x vs % x (%v)", enc2, enc, err)
		}
	})
}
