package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The TOML decoder keeps key positions to itself and names array-of-table
// elements without their index, so error messages could not say "mount[1]
// at line 12". keyIndex recovers that: a small scanner walks the (already
// parsed, hence valid) document and records, for each key in the canonical
// form used in errors, the line where it is defined and, for scalars, the
// value's source text.
//
// The scanner is best effort by design: on anything it does not expect it
// stops, and the keys it has not reached get line 0 ("unknown"). It never
// decides whether a document is valid; the TOML decoder does.

// keyIndex maps canonical keys to source lines and scalar value text.
type keyIndex struct {
	lines map[string]int
	raw   map[string]string
}

// line returns the line of key, or of its nearest ancestor that is in the
// file (a missing mount[1].source points at mount[1]), or 0.
func (ix *keyIndex) line(key string) int {
	if ix == nil {
		return 0
	}
	for key != "" {
		if l, ok := ix.lines[key]; ok {
			return l
		}
		key = parentKey(key)
	}
	return 0
}

// parentKey strips the last ".seg" or "[i]" from a canonical key.
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	// The last '.' outside quotes.
	inQuote, last := false, -1
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case '.':
			if !inQuote {
				last = i
			}
		}
	}
	if last < 0 {
		return ""
	}
	return key[:last]
}

// keySeg formats one key segment: bare when TOML allows it, quoted
// otherwise.
func keySeg(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(s)
		}
	}
	return s
}

// joinKey appends a segment to a canonical key.
func joinKey(prefix, seg string) string {
	if prefix == "" {
		return keySeg(seg)
	}
	return prefix + "." + keySeg(seg)
}

// indexKey appends an array index to a canonical key.
func indexKey(prefix string, i int) string {
	return prefix + "[" + strconv.Itoa(i) + "]"
}

// scanner is the state of one indexKeys run.
type scanner struct {
	src  string
	pos  int
	line int
	bad  bool           // stopped at something unexpected
	aot  map[string]int // arrays of tables: canonical key -> elements so far
	ix   *keyIndex
}

// indexKeys scans src and returns its key index.
func indexKeys(src string) *keyIndex {
	s := &scanner{
		src:  strings.TrimPrefix(src, "\uFEFF"),
		line: 1,
		aot:  map[string]int{},
		ix:   &keyIndex{lines: map[string]int{}, raw: map[string]string{}},
	}
	prefix := ""
	for !s.bad {
		s.skipBlank()
		if s.eof() {
			break
		}
		start := s.line
		if s.peek() == '[' {
			s.pos++
			isArray := !s.eof() && s.peek() == '['
			if isArray {
				s.pos++
			}
			s.skipSpace()
			parts := s.keyPath()
			s.skipSpace()
			if isArray {
				s.expect("]]")
			} else {
				s.expect("]")
			}
			if s.bad || len(parts) == 0 {
				break
			}
			if isArray {
				canon := joinKey(s.resolve(parts[:len(parts)-1], start), parts[len(parts)-1])
				n := s.aot[canon]
				s.aot[canon] = n + 1
				s.record(canon, start)
				prefix = indexKey(canon, n)
			} else {
				prefix = s.resolve(parts, start)
			}
			s.record(prefix, start)
		} else {
			s.keyValue(prefix)
		}
		s.endOfLine()
	}
	return s.ix
}

func (s *scanner) eof() bool  { return s.pos >= len(s.src) }
func (s *scanner) peek() byte { return s.src[s.pos] }

// record notes the first line where key appears.
func (s *scanner) record(key string, line int) {
	if _, ok := s.ix.lines[key]; !ok {
		s.ix.lines[key] = line
	}
}

// resolve turns a table header's key path into a canonical key: a segment
// that names an array of tables means its last element.
func (s *scanner) resolve(parts []string, line int) string {
	cur := ""
	for _, p := range parts {
		cur = joinKey(cur, p)
		if n, ok := s.aot[cur]; ok && n > 0 {
			cur = indexKey(cur, n-1)
		}
		s.record(cur, line)
	}
	return cur
}

// skipSpace skips spaces and tabs.
func (s *scanner) skipSpace() {
	for !s.eof() && (s.peek() == ' ' || s.peek() == '\t') {
		s.pos++
	}
}

// skipBlank skips whitespace, newlines and comments.
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r':
			s.pos++
		case '\n':
			s.pos++
			s.line++
		case '#':
			s.skipComment()
		default:
			return
		}
	}
}

// skipComment skips to the end of the line (not past the newline).
func (s *scanner) skipComment() {
	if i := strings.IndexByte(s.src[s.pos:], '\n'); i >= 0 {
		s.pos += i
	} else {
		s.pos = len(s.src)
	}
}

// endOfLine expects only blanks and a comment before the newline.
func (s *scanner) endOfLine() {
	if s.bad {
		return
	}
	s.skipSpace()
	if !s.eof() && s.peek() == '#' {
		s.skipComment()
	}
	if !s.eof() && s.peek() == '\r' {
		s.pos++
	}
	if s.eof() {
		return
	}
	if s.peek() != '\n' {
		s.bad = true
		return
	}
	s.pos++
	s.line++
}

func (s *scanner) expect(tok string) {
	if s.bad || !strings.HasPrefix(s.src[s.pos:], tok) {
		s.bad = true
		return
	}
	s.pos += len(tok)
}

// keyPath reads a dotted key: bare, "basic" or 'literal' segments.
func (s *scanner) keyPath() []string {
	var parts []string
	for !s.bad {
		s.skipSpace()
		if s.eof() {
			s.bad = true
			return nil
		}
		var seg string
		switch c := s.peek(); {
		case c == '"':
			seg = s.basicString()
		case c == '\'':
			seg = s.literalString()
		case isBare(c):
			start := s.pos
			for !s.eof() && isBare(s.peek()) {
				s.pos++
			}
			seg = s.src[start:s.pos]
		default:
			s.bad = true
			return nil
		}
		parts = append(parts, seg)
		s.skipSpace()
		if s.eof() || s.peek() != '.' {
			return parts
		}
		s.pos++
	}
	return nil
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// keyValue reads `key = value` under prefix.
func (s *scanner) keyValue(prefix string) {
	line := s.line
	parts := s.keyPath()
	if s.bad {
		return
	}
	s.skipSpace()
	s.expect("=")
	s.skipSpace()
	if s.bad {
		return
	}
	key := prefix
	for _, p := range parts {
		key = joinKey(key, p)
		s.record(key, line)
	}
	s.value(key)
}

// value reads one value for key, recording nested keys.
func (s *scanner) value(key string) {
	if s.eof() {
		s.bad = true
		return
	}
	switch {
	case strings.HasPrefix(s.src[s.pos:], `"""`):
		s.multiline(`"""`, true)
	case strings.HasPrefix(s.src[s.pos:], `'''`):
		s.multiline(`'''`, false)
	case s.peek() == '"':
		s.basicString()
	case s.peek() == '\'':
		s.literalString()
	case s.peek() == '[':
		s.array(key)
	case s.peek() == '{':
		s.inlineTable(key)
	default:
		start := s.pos
		for !s.eof() && !strings.ContainsRune(",]}\n#\r", rune(s.peek())) {
			s.pos++
		}
		raw := strings.TrimRight(s.src[start:s.pos], " \t")
		if raw == "" {
			s.bad = true
			return
		}
		s.ix.raw[key] = raw
	}
}

func (s *scanner) array(key string) {
	s.pos++ // '['
	for i := 0; !s.bad; i++ {
		s.skipBlank()
		if s.eof() {
			s.bad = true
			return
		}
		if s.peek() == ']' {
			s.pos++
			return
		}
		elem := indexKey(key, i)
		s.record(elem, s.line)
		s.value(elem)
		s.skipBlank()
		if s.eof() {
			s.bad = true
			return
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return
		default:
			s.bad = true
		}
	}
}

func (s *scanner) inlineTable(key string) {
	s.pos++ // '{'
	for !s.bad {
		s.skipBlank() // TOML 1.1 allows newlines inside inline tables
		if s.eof() {
			s.bad = true
			return
		}
		if s.peek() == '}' {
			s.pos++
			return
		}
		s.keyValue(key)
		s.skipBlank()
		if s.eof() {
			s.bad = true
			return
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return
		default:
			s.bad = true
		}
	}
}

// basicString reads a "..." string and returns its value.
func (s *scanner) basicString() string {
	s.pos++ // '"'
	var b strings.Builder
	for !s.eof() {
		c := s.peek()
		switch c {
		case '"':
			s.pos++
			return b.String()
		case '\n':
			s.bad = true
			return ""
		case '\\':
			s.escape(&b)
		default:
			b.WriteByte(c)
			s.pos++
		}
	}
	s.bad = true
	return ""
}

// TOML's escapes (\e and \xHH are TOML 1.1).
var (
	simpleEscapes = map[byte]byte{'b': '\b', 't': '\t', 'n': '\n', 'f': '\f', 'r': '\r', 'e': 0x1b, '"': '"', '\\': '\\'}
	hexEscapes    = map[byte]int{'x': 2, 'u': 4, 'U': 8}
)

// escape decodes one backslash escape into b.
func (s *scanner) escape(b *strings.Builder) {
	s.pos++ // '\\'
	if s.eof() {
		s.bad = true
		return
	}
	c := s.peek()
	s.pos++
	if r, ok := simpleEscapes[c]; ok {
		b.WriteByte(r)
		return
	}
	width := hexEscapes[c]
	if width == 0 || s.pos+width > len(s.src) {
		s.bad = true
		return
	}
	n, err := strconv.ParseUint(s.src[s.pos:s.pos+width], 16, 32)
	if err != nil || !utf8.ValidRune(rune(n)) {
		s.bad = true
		return
	}
	s.pos += width
	b.WriteRune(rune(n))
}

// literalString reads a '...' string and returns its value.
func (s *scanner) literalString() string {
	s.pos++ // '\''
	i := strings.IndexAny(s.src[s.pos:], "'\n")
	if i < 0 || s.src[s.pos+i] != '\'' {
		s.bad = true
		return ""
	}
	v := s.src[s.pos : s.pos+i]
	s.pos += i + 1
	return v
}

// multiline skips a multi-line string (delim is three quotes of either
// kind), counting lines.
func (s *scanner) multiline(delim string, escapes bool) {
	s.pos += len(delim)
	for !s.eof() {
		switch c := s.peek(); {
		case escapes && c == '\\':
			s.pos++
			if !s.eof() {
				if s.peek() == '\n' {
					s.line++
				}
				s.pos++
			}
		case c == '\n':
			s.line++
			s.pos++
		case strings.HasPrefix(s.src[s.pos:], delim):
			s.pos += len(delim)
			// Up to two more quotes belong to the content.
			for k := 0; k < 2 && !s.eof() && s.peek() == delim[0]; k++ {
				s.pos++
			}
			return
		default:
			s.pos++
		}
	}
	s.bad = true
}
