package server

import (
	"math/bits"
	"sync"
)

// Buffers for frames come from sync.Pools by size class: a power of two
// from 512 bytes to MaxMsize, plus classSlack bytes, so that a frame of
// msize bytes with its payload moved to payloadAlign still fits its class.
// Pools hold *[]byte so that Get and Put do not allocate; a buffer that
// append grew is returned to the largest class its new capacity covers.
const (
	minClassShift = 9  // 512 bytes
	maxClassShift = 22 // 4 MiB == MaxMsize
	numClasses    = maxClassShift - minClassShift + 1
	classSlack    = payloadAlign
)

var bufPools [numClasses]sync.Pool

// payloadAlign is where Rread and Twrite payloads start in their buffers:
// buffers of a page or more are page-aligned, and the kernel copies to and
// from a 64-byte-aligned address markedly faster than from the odd offset
// a payload has in its frame (11 for Rread, 23 for Twrite). The header goes
// in front of it.
const payloadAlign = 64

func classSize(c int) int { return 1<<(c+minClassShift) + classSlack }

// classFor returns the smallest class whose buffers hold n bytes.
func classFor(n int) int {
	if n <= classSize(0) {
		return 0
	}
	return bits.Len(uint(n-classSlack-1)) - minClassShift
}

// getBuf returns a buffer of length n (n <= MaxMsize+classSlack) whose
// bytes are not cleared: callers overwrite what they send.
func getBuf(n int) *[]byte {
	c := classFor(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, classSize(c))
	return &b
}

// putBuf returns a buffer to the largest class its capacity covers.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	c := cap(*p) - classSlack
	if c < 1<<minClassShift {
		return
	}
	class := bits.Len(uint(c)) - 1 - minClassShift
	if class >= numClasses {
		class = numClasses - 1
	}
	*p = (*p)[:0]
	bufPools[class].Put(p)
}
