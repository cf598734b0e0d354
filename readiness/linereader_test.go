package readiness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

type lineResult struct {
	line  string
	trunc bool
}

// readAll drains a LineReader and returns the lines and the error that
// ended it (nil for io.EOF).
func readAll(t testing.TB, lr *LineReader) ([]lineResult, error) {
	t.Helper()
	var out []lineResult
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("LineReader never ends")
		}
		line, trunc, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, lineResult{line, trunc})
	}
}

func TestLineReader(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		want []lineResult
	}{
		// No input, no lines.
		{"empty", "", 0, nil},
		// Plain lines.
		{"two lines", "a\nb\n", 0, []lineResult{{"a", false}, {"b", false}}},
		// The last line without a newline is returned.
		{"last line without newline", "a\nb", 0, []lineResult{{"a", false}, {"b", false}}},
		// Empty lines are lines.
		{"empty lines", "\n\n", 0, []lineResult{{"", false}, {"", false}}},
		// CRLF: the '\r' is dropped.
		{"crlf", "a\r\nb\r\n", 0, []lineResult{{"a", false}, {"b", false}}},
		// A lone '\r' inside a line is a control character.
		{"inner cr", "a\rb\n", 0, []lineResult{{"a?b", false}}},
		// A line longer than the limit is cut and flagged; the rest of
		// it is discarded, the next line is intact.
		{"long line", "abcdefgh\nxy\n", 4, []lineResult{{"abcd", true}, {"xy", false}}},
		// Exactly the limit is not truncated.
		{"exact limit", "abcd\n", 4, []lineResult{{"abcd", false}}},
		// One past the limit, the extra byte being '\r', is truncated.
		{"limit plus cr", "abcd\r\n", 4, []lineResult{{"abcd", true}}},
		// NULs and invalid UTF-8 become '?'.
		{"binary", "a\x00b\xffc\n", 0, []lineResult{{"a?b?c", false}}},
		// Terminal escapes cannot reach a log or a terminal.
		{"escape", "\x1b[31mred\x1b[0m\n", 0, []lineResult{{"?[31mred?[0m", false}}},
		// Valid UTF-8 and tabs are kept.
		{"utf8 and tab", "héllo\t✓\n", 0, []lineResult{{"héllo\t✓", false}}},
		// C1 controls and DEL are replaced.
		{"c1 and del", "\u0085x\x7f\n", 0, []lineResult{{"?x?", false}}},
		// Truncation that cuts a rune drops the partial rune.
		{"cut rune", "aé\n", 2, []lineResult{{"a", true}}},
		// Truncation at a rune boundary keeps the whole rune.
		{"whole rune at limit", "aéz\n", 3, []lineResult{{"aé", true}}},
		// A last line without newline that is too long.
		{"long last line", "abcdef", 3, []lineResult{{"abc", true}}},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		// One byte per Read: every split point is exercised.
		{"one byte", iotest.OneByteReader},
		// Data and EOF in the same Read.
		{"data with eof", iotest.DataErrReader},
		// Half the requested bytes per Read.
		{"half", iotest.HalfReader},
	}
	for _, tc := range cases {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				got, err := readAll(t, NewLineReader(rd.wrap(strings.NewReader(tc.in)), tc.max))
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("lines %+v, want %+v", got, tc.want)
				}
			})
		}
	}
}

// errAfter returns data, then err.
type errAfter struct {
	data []byte
	err  error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestLineReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name  string
		r     io.Reader
		lines []string
		err   error
	}{
		// A read error is reported after the partial line before it,
		// then the reader ends.
		{"error after partial line", &errAfter{[]byte("ok\npartial"), boom}, []string{"ok", "partial"}, boom},
		// An error with nothing pending is reported at once.
		{"error at line start", &errAfter{[]byte("ok\n"), boom}, []string{"ok"}, boom},
		// A reader that returns (0, nil) forever does not hang it.
		{"no progress", zeroReader{}, nil, io.ErrNoProgress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lr := NewLineReader(tc.r, 0)
			got, err := readAll(t, lr)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			var lines []string
			for _, g := range got {
				lines = append(lines, g.line)
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.lines) {
				t.Errorf("lines %q, want %q", lines, tc.lines)
			}
			if _, _, err := lr.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("after the error Next = %v, want io.EOF", err)
			}
		})
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// lazyLine produces n bytes of 'x' without holding them, then tail.
type lazyLine struct {
	n    int
	tail []byte
}

func (r *lazyLine) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(len(p), r.n)
		for i := range p[:k] {
			p[i] = 'x'
		}
		r.n -= k
		return k, nil
	}
	if len(r.tail) == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.tail)
	r.tail = r.tail[k:]
	return k, nil
}

// TestLineReaderHugeLineBoundedMemory reads a 10 MiB line without a
// newline, produced lazily, and checks that reading it allocates a small,
// fixed amount whatever its size.
func TestLineReaderHugeLineBoundedMemory(t *testing.T) {
	const size = 10 << 20
	cases := []struct {
		name  string
		tail  string
		lines []string
	}{
		// The huge line is the last line, without a newline.
		{"huge last line", "", []string{strings.Repeat("x", DefaultMaxLine)}},
		// A normal line after the huge one is intact.
		{"huge then ready", "\nfsd: ready\n", []string{strings.Repeat("x", DefaultMaxLine), "fsd: ready"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lr := NewLineReader(&lazyLine{n: size, tail: []byte(tc.tail)}, DefaultMaxLine)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			line, trunc, err := lr.Next()
			runtime.ReadMemStats(&after)
			if err != nil || !trunc || line != tc.lines[0] {
				t.Fatalf("Next = %d bytes, truncated %v, %v; want %d bytes truncated", len(line), trunc, err, DefaultMaxLine)
			}
			// The line buffer and the returned string: a few times
			// DefaultMaxLine. Keeping the line would be 10 MiB.
			alloc := after.TotalAlloc - before.TotalAlloc
			if alloc > 64<<10 {
				t.Errorf("reading a %d-byte line allocated %d bytes", size, alloc)
			}
			t.Logf("reading a %d-byte line allocated %d bytes", size, alloc)
			rest, err := readAll(t, lr)
			if err != nil {
				t.Fatal(err)
			}
			if len(rest) != len(tc.lines)-1 {
				t.Fatalf("%d more lines, want %d", len(rest), len(tc.lines)-1)
			}
			for i, r := range rest {
				if r.line != tc.lines[i+1] || r.trunc {
					t.Errorf("line %d = %q (truncated %v), want %q", i+1, r.line, r.trunc, tc.lines[i+1])
				}
			}
		})
	}
}

func TestTail(t *testing.T) {
	cases := []struct {
		name string
		n    int
		add  int
		want []string
	}{
		// Fewer lines than the capacity: all of them.
		{"not full", 3, 2, []string{"0", "1"}},
		// Exactly full.
		{"full", 3, 3, []string{"0", "1", "2"}},
		// Wrapped around: the last n, oldest first.
		{"wrapped", 3, 7, []string{"4", "5", "6"}},
		// Capacity 0 keeps nothing.
		{"zero", 0, 5, []string{}},
		// A negative capacity is 0.
		{"negative", -1, 5, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tl := NewTail(tc.n)
			for i := 0; i < tc.add; i++ {
				tl.Add(fmt.Sprint(i))
			}
			if got := tl.Lines(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Lines = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTailConcurrent(t *testing.T) {
	tl := NewTail(10)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				tl.Add(fmt.Sprintf("g%d-%d", g, i))
				if n := len(tl.Lines()); n > 10 {
					t.Errorf("tail holds %d lines", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(tl.Lines()); n != 10 {
		t.Errorf("tail holds %d lines, want 10", n)
	}
}

// chunkReader returns data in pieces of at most n bytes.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// expectSanitized is the fuzz oracle for one untruncated line: each valid
// rune kept, except control characters (not tab), and each invalid byte
// replaced by '?'.
func expectSanitized(raw []byte) string {
	s := string(raw)
	var b strings.Builder
	type at struct {
		i int
		r rune
	}
	var runes []at
	for i, r := range s {
		runes = append(runes, at{i, r})
	}
	for k, x := range runes {
		next := len(s)
		if k+1 < len(runes) {
			next = runes[k+1].i
		}
		switch r := x.r; {
		case r == utf8.RuneError && next-x.i == 1:
			b.WriteByte('?') // an invalid byte, not a literal U+FFFD
		case r < 0x20 && r != '\t', r == 0x7f, r >= 0x80 && r < 0xa0:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("fsd: ready\n"), uint16(0), uint8(0))
	f.Add([]byte("a\r\nb\x00\xff\n\n\xe2\x9c"), uint16(3), uint8(1))
	f.Add(bytes.Repeat([]byte("long"), 300), uint16(16), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, maxLine uint16, chunk uint8) {
		max := int(maxLine % 512) // keep the limit small so truncation happens
		if max == 0 {
			max = 1 + len(data)%64
		}
		n := int(chunk)
		if n == 0 {
			n = 1
		}
		got, err := readAll(t, NewLineReader(&chunkReader{data: data, n: n}, max))
		if err != nil {
			t.Fatalf("error %v on a clean stream", err)
		}
		// One line per '\n'-separated segment (none for empty input; a
		// trailing '\n' does not start another).
		segs := bytes.Split(data, []byte("\n"))
		if len(data) == 0 || data[len(data)-1] == '\n' {
			segs = segs[:len(segs)-1]
		}
		if len(got) != len(segs) {
			t.Fatalf("%d lines, want %d", len(got), len(segs))
		}
		allPlain := true
		for i, g := range got {
			if len(g.line) > max {
				t.Fatalf("line %d is %d bytes, limit %d", i, len(g.line), max)
			}
			if !utf8.ValidString(g.line) {
				t.Fatalf("line %d is not valid UTF-8: %q", i, g.line)
			}
			for _, r := range g.line {
				if r < 0x20 && r != '\t' || r == 0x7f || r >= 0x80 && r < 0xa0 {
					t.Fatalf("line %d has control character %U: %q", i, r, g.line)
				}
			}
			seg := segs[i]
			if g.trunc != (len(seg) > max) {
				t.Fatalf("line %d truncated = %v, segment is %d bytes, limit %d", i, g.trunc, len(seg), max)
			}
			if g.trunc {
				allPlain = false
				continue
			}
			seg = bytes.TrimSuffix(seg, []byte("\r"))
			if want := expectSanitized(seg); g.line != want {
				t.Fatalf("line %d = %q, want %q", i, g.line, want)
			}
			if g.line != string(seg) {
				allPlain = false
			}
		}
		// Concatenation: plain, untruncated lines put back together are
		// the input.
		if allPlain {
			joined := []byte{}
			for _, g := range got {
				joined = append(joined, g.line...)
				joined = append(joined, '\n')
			}
			in := bytes.Clone(data)
			if len(in) > 0 && in[len(in)-1] != '\n' {
				in = append(in, '\n')
			}
			in = bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
			if !bytes.Equal(joined, in) {
				t.Fatalf("joined lines %q differ from input %q", joined, in)
			}
		}
	})
}
