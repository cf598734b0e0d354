// Package readiness decides when a freshly started daemon is ready: it reads
// the daemon's stderr line by line, reports the first line that contains the
// ready text, and otherwise says why the daemon never got there (timeout,
// exit, closed stream, cancelled context) together with its last lines.
//
// Everything here reads untrusted, unbounded input: memory stays bounded by
// the longest line kept (DefaultMaxLine unless set) plus one read buffer,
// whatever the daemon writes.
package readiness

import (
	"bytes"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/pkg/errors"
)

// DefaultMaxLine is the number of bytes kept per line; the rest of a longer
// line is discarded.
const DefaultMaxLine = 4096

// readBufSize is the size of LineReader's read buffer.
const readBufSize = 4096

// maxEmptyReads is how many (0, nil) reads in a row LineReader tolerates
// before it gives up with io.ErrNoProgress (as bufio does).
const maxEmptyReads = 100

// LineReader splits a byte stream into lines with bounded memory.
//
// A line ends at '\n' (a '\r' just before it is dropped); a last line without
// a newline is returned at EOF. A line longer than the limit is cut to the
// limit and reported as truncated; the rest of it is read and discarded.
// Returned lines are valid UTF-8 without control characters: each invalid
// byte and each control character other than tab becomes '?', so a line is
// never longer than the limit.
type LineReader struct {
	r       io.Reader
	max     int
	buf     []byte // read buffer
	start   int    // unconsumed data is buf[start:end]
	end     int
	line    []byte // bytes of the current line kept so far (<= max)
	trunc   bool   // the current line exceeded max
	err     error  // sticky read error, returned after pending data
	started bool   // the current line has at least one byte (or a newline came)
}

// NewLineReader returns a LineReader over r keeping at most maxLine bytes
// per line (DefaultMaxLine when maxLine <= 0).
func NewLineReader(r io.Reader, maxLine int) *LineReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &LineReader{r: r, max: maxLine, buf: make([]byte, readBufSize)}
}

// Next returns the next line and whether it was truncated. After the last
// line it returns io.EOF; a read error other than EOF is returned once the
// line in progress has been returned. Next is not safe for concurrent use.
func (l *LineReader) Next() (line string, truncated bool, err error) {
	for {
		// Consume buffered data up to a newline.
		if l.start < l.end {
			chunk := l.buf[l.start:l.end]
			nl := bytes.IndexByte(chunk, '\n')
			part := chunk
			if nl >= 0 {
				part = chunk[:nl]
			}
			l.keep(part)
			if len(part) > 0 {
				l.started = true
			}
			if nl >= 0 {
				l.start += nl + 1
				return l.finish()
			}
			l.start = l.end
		}
		if l.err != nil {
			if l.started || len(l.line) > 0 || l.trunc {
				return l.finish()
			}
			if errors.Is(l.err, io.EOF) {
				return "", false, io.EOF
			}
			err := l.err
			l.err = io.EOF // report a read error once, then EOF
			return "", false, err
		}
		l.fill()
	}
}

// fill reads into the (empty) buffer.
func (l *LineReader) fill() {
	l.start, l.end = 0, 0
	for i := 0; i < maxEmptyReads; i++ {
		n, err := l.r.Read(l.buf)
		if n < 0 || n > len(l.buf) {
			l.err = io.ErrShortBuffer // a broken reader; do not trust it
			return
		}
		l.end = n
		if err != nil {
			l.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	l.err = io.ErrNoProgress
}

// keep appends what fits of p to the current line.
func (l *LineReader) keep(p []byte) {
	if room := l.max - len(l.line); room < len(p) {
		if room > 0 {
			l.line = append(l.line, p[:room]...)
		}
		l.trunc = true
		return
	}
	l.line = append(l.line, p...)
}

// finish returns the current line and resets the state for the next one.
func (l *LineReader) finish() (string, bool, error) {
	raw, trunc := l.line, l.trunc
	if !trunc && len(raw) > 0 && raw[len(raw)-1] == '\r' {
		raw = raw[:len(raw)-1]
	}
	if trunc {
		raw = trimPartialRune(raw)
	}
	s := sanitize(raw)
	l.line, l.trunc, l.started = l.line[:0], false, false
	return s, trunc, nil
}

// trimPartialRune drops an incomplete UTF-8 sequence that truncation cut at
// the end of b.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing is cut
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// sanitize makes b printable: invalid UTF-8 bytes and control characters
// (C0 except tab, DEL, C1) become '?'. The result is never longer than b.
func sanitize(b []byte) string {
	clean := true
	for _, c := range b {
		if c >= utf8.RuneSelf || c < 0x20 && c != '\t' || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1:
			out = append(out, '?')
			size = 1
		case r < 0x20 && r != '\t', r == 0x7f, r >= 0x80 && r < 0xa0:
			out = append(out, '?')
		default:
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}

// Tail keeps the last n lines added to it. It is safe for concurrent use.
type Tail struct {
	mu    sync.Mutex
	lines []string // ring buffer of cap n
	next  int      // where the next line goes once the ring is full
	full  bool
}

// NewTail returns a Tail keeping the last n lines (none when n <= 0).
func NewTail(n int) *Tail {
	if n < 0 {
		n = 0
	}
	return &Tail{lines: make([]string, 0, n)}
}

// Add records line, dropping the oldest when the tail is full.
func (t *Tail) Add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cap(t.lines) == 0 {
		return
	}
	if !t.full {
		t.lines = append(t.lines, line)
		if len(t.lines) == cap(t.lines) {
			t.full = true
		}
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % len(t.lines)
}

// Lines returns a copy of the kept lines, oldest first.
func (t *Tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines))
	if !t.full {
		return append(out, t.lines...)
	}
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}
