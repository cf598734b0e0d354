package server

import "testing"

// TestBufferClasses proves every size gets a buffer that holds it from the
// smallest class that can, so an msize frame with an aligned payload does
// not double its buffer, and returned buffers go back to a class they fill.
func TestBufferClasses(t *testing.T) {
	tests := []struct {
		n       int
		wantCap int
	}{
		{1, 512 + classSlack},                           // tiny replies share the smallest class
		{512 + classSlack, 512 + classSlack},            // the class holds its slack
		{512 + classSlack + 1, 1024 + classSlack},       // one more byte is the next class
		{1 << 20, 1<<20 + classSlack},                   // an msize frame
		{payloadAlign + 1<<20 - 11, 1<<20 + classSlack}, // a full Rread with its aligned payload
		{payloadAlign - 23 + 1<<20, 1<<20 + classSlack}, // a full Twrite moved to align its payload
		{MaxMsize + classSlack, MaxMsize + classSlack},  // the largest frame
	}
	for _, tc := range tests {
		p := getBuf(tc.n)
		if len(*p) != tc.n || cap(*p) != tc.wantCap {
			t.Errorf("getBuf(%d): len %d cap %d, want cap %d", tc.n, len(*p), cap(*p), tc.wantCap)
		}
		putBuf(p)
		// The buffer went back to the class it came from.
		if c := classFor(tc.n); c < 0 || c >= numClasses || classSize(c) != tc.wantCap {
			t.Errorf("classFor(%d) = %d (size %d)", tc.n, c, classSize(c))
		}
	}
	// A buffer grown by append to an odd capacity goes to the class it
	// covers, never to one it cannot hold.
	b := make([]byte, 0, 3000)
	putBuf(&b)
	if got := getBuf(1024 + classSlack); cap(*got) < 1024+classSlack {
		t.Fatalf("pooled buffer of cap %d handed out for %d bytes", cap(*got), 1024+classSlack)
	}
}
