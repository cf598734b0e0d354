package config

import (
	"bytes"
	"encoding"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/pkg/errors"
)

// Load reads the file at path and parses it with Parse. Errors name the
// file; an unreadable file gives an error that does not match ErrInvalid
// (errors.Is(err, fs.ErrNotExist) works for a missing one).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "config: read %s", path)
	}
	return Parse(data, path)
}

// Parse decodes TOML data strictly, applies defaults and validates the
// result. source names the data in errors (a file path, "stdin").
//
// Strictly means: a key the configuration does not have (also one that
// differs only in case), a value of the wrong type, a bad duration or mode
// is an error naming the key and its line. All decoding problems are
// reported together; validation runs only when decoding succeeded.
func Parse(data []byte, source string) (*Config, error) {
	text := string(data)
	var raw map[string]any
	if _, err := toml.Decode(text, &raw); err != nil {
		return nil, syntaxError(err, text, source)
	}
	ix := indexKeys(text)
	d := &decoder{ix: ix}
	d.walkStruct("", raw, reflect.TypeOf(Config{}))
	if len(d.errs) > 0 {
		return nil, d.finish(source)
	}

	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		// The walk above checks everything the decoder checks; reaching
		// this is a bug in the walk, still reported as a config error.
		return nil, &Error{Err: errorf(ErrWrongType, "%v", err), Source: source}
	}
	// Cross-check with the decoder's own view of unknown keys; a key
	// inside an unknown table is covered by the table's error.
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		undecoded[tomlKey(k)] = true
	}
	for _, k := range md.Undecoded() {
		key := tomlKey(k)
		if len(k) > 1 && undecoded[tomlKey(k[:len(k)-1])] {
			continue
		}
		if !d.reported[key] {
			d.add(key, ix.line(key), errorf(ErrUnknownKey, "unknown key"))
		}
	}
	if len(d.errs) > 0 {
		return nil, d.finish(source)
	}

	c.applyDefaults(&md)
	c.index = ix
	c.source = source
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// syntaxError converts the TOML parser's error. The line is computed from
// the error's byte offset: the parser's own line number is off near the end
// of the input (0 for an error on the last byte).
func syntaxError(err error, text, source string) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return &Error{Line: 1, Err: errorf(ErrSyntax, "%v", err), Source: source}
	}
	line := pe.Position.Line
	if start := pe.Position.Start; start >= 0 && start <= len(text) {
		line = 1 + strings.Count(text[:start], "\n")
	}
	return &Error{Key: pe.LastKey, Line: max(line, 1), Err: &tomlError{pe}, Source: source}
}

// tomlError keeps the parser's error (errors.As finds toml.ParseError) and
// prints only its message, since Error prints the line.
type tomlError struct{ pe toml.ParseError }

func (e *tomlError) Error() string { return "TOML syntax: " + e.pe.Message }

// Unwrap returns the class; As also finds the ParseError through the
// list.
func (e *tomlError) Unwrap() []error { return []error{ErrSyntax, e.pe} }

// tomlKey formats a decoder key in our canonical form (without array
// indexes, which the decoder does not track).
func tomlKey(k toml.Key) string {
	key := ""
	for _, seg := range k {
		key = joinKey(key, seg)
	}
	return key
}

// decoder walks the raw TOML tree against the Config type and collects
// every unknown key and type error with its canonical key.
type decoder struct {
	ix       *keyIndex
	errs     ErrorList
	reported map[string]bool
}

func (d *decoder) add(key string, line int, err error) {
	if d.reported == nil {
		d.reported = map[string]bool{}
	}
	d.reported[key] = true
	d.errs = append(d.errs, &Error{Key: key, Line: line, Err: err})
}

// finish sorts the errors into file order, sets the source and returns
// them as one error.
func (d *decoder) finish(source string) error {
	d.errs.sortByLine()
	for _, e := range d.errs {
		e.Source = source
	}
	return d.errs.asError()
}

var tomlUnmarshaler = reflect.TypeOf((*toml.Unmarshaler)(nil)).Elem()

// fieldsOf maps the toml tag names of t's fields to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func (d *decoder) walkStruct(prefix string, m map[string]any, t reflect.Type) {
	fields := fieldsOf(t)
	for k, v := range m {
		key := joinKey(prefix, k)
		ft, ok := fields[k]
		if !ok {
			d.add(key, d.ix.line(key), errorf(ErrUnknownKey, "unknown key"))
			continue
		}
		d.walkValue(key, v, ft)
	}
}

func (d *decoder) walkValue(key string, v any, t reflect.Type) {
	line := d.ix.line(key)
	if t.Kind() == reflect.Pointer {
		// An optional key (nil when absent) is checked as its value.
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(tomlUnmarshaler) {
		if t == reflect.TypeOf(FileMode(0)) && !d.octal(key, v) {
			return
		}
		u := reflect.New(t).Interface().(toml.Unmarshaler)
		if err := u.UnmarshalTOML(v); err != nil {
			d.add(key, line, err)
		}
		return
	}
	wrong := func(want string) {
		d.add(key, line, errorf(ErrWrongType, "want %s, got %s", want, tomlType(v)))
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			wrong("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			wrong("a boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			wrong("an integer")
			return
		}
		if reflect.New(t).Elem().OverflowInt(n) {
			d.add(key, line, errorf(ErrBadValue, "%d is out of range", n))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(int64)
		if !ok {
			wrong("an integer")
			return
		}
		if n < 0 || reflect.New(t).Elem().OverflowUint(uint64(n)) {
			d.add(key, line, errorf(ErrBadValue, "%d is out of range", n))
		}
	case reflect.Slice:
		rv := reflect.ValueOf(v)
		if v == nil || rv.Kind() != reflect.Slice {
			wrong("an array")
			return
		}
		for i := 0; i < rv.Len(); i++ {
			d.walkValue(indexKey(key, i), rv.Index(i).Interface(), t.Elem())
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			wrong("a table")
			return
		}
		d.walkStruct(key, m, t)
	default:
		d.add(key, line, errorf(ErrWrongType, "unsupported field type %s", t))
	}
}

// octal checks that an integer mode is written in octal (0o600): a decimal
// 600 would silently mean 0o1130, a decimal 400 0o620. It reports false
// after recording an error.
func (d *decoder) octal(key string, v any) bool {
	n, isInt := v.(int64)
	raw, known := d.ix.raw[key]
	if !isInt || !known || n <= 0 || strings.HasPrefix(raw, "0o") {
		return true
	}
	msg := fmt.Sprintf("mode %s is not written in octal (it means 0o%o)", raw, n)
	if strings.Trim(raw, "01234567") == "" {
		msg += fmt.Sprintf("; write 0o%s or \"%s\"", raw, leftPad(raw, 4))
	} else {
		msg += "; write modes in octal, like 0o600 or \"0600\""
	}
	d.add(key, d.ix.line(key), errorf(ErrWrongType, "%s", msg))
	return false
}

// tomlType names the TOML type of a decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	}
	if v != nil && reflect.TypeOf(v).Kind() == reflect.Slice {
		return "an array"
	}
	return "an unknown type"
}

// applyDefaults fills the keys the file leaves out.
func (c *Config) applyDefaults(md *toml.MetaData) {
	if !md.IsDefined("socket_mode") {
		c.SocketMode = DefaultSocketMode
	}
	if !md.IsDefined("ready_timeout") {
		c.ReadyTimeout = Duration(DefaultReadyTimeout)
	}
	if !md.IsDefined("stop_timeout") {
		c.StopTimeout = Duration(DefaultStopTimeout)
	}
	if !md.IsDefined("log", "level") {
		c.Log.Level = DefaultLogLevel
	}
	if !md.IsDefined("log", "format") {
		c.Log.Format = DefaultLogFormat
	}
	if c.IsBuiltinDaemon() && c.Daemon.ReadyLine == "" {
		c.Daemon.ReadyLine = DefaultReadyLine
	}
}

// Compile-time checks: how FileMode and Duration decode and print.
var (
	_ toml.Unmarshaler         = (*FileMode)(nil)
	_ encoding.TextUnmarshaler = (*FileMode)(nil)
	_ encoding.TextMarshaler   = FileMode(0)
	_ toml.Unmarshaler         = (*Duration)(nil)
	_ encoding.TextUnmarshaler = (*Duration)(nil)
	_ encoding.TextMarshaler   = Duration(0)
)

// Perm returns the mode as permission bits.
func (m FileMode) Perm() os.FileMode { return os.FileMode(m) & os.ModePerm }

// String formats the mode as four octal digits ("0600").
func (m FileMode) String() string { return "0" + leftPad(strconv.FormatUint(uint64(m), 8), 3) }

func leftPad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}

// MarshalText implements encoding.TextMarshaler ("0600").
func (m FileMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: an octal string such
// as "0600", "600" or "0o600", at most 0777.
func (m *FileMode) UnmarshalText(text []byte) error {
	s := string(text)
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	if digits == "" {
		return errorf(ErrWrongType, "mode %q is not an octal number such as \"0600\"", s)
	}
	n, err := strconv.ParseUint(digits, 8, 32)
	if err != nil {
		return errorf(ErrWrongType, "mode %q is not an octal number such as \"0600\"", s)
	}
	if n > 0o777 {
		return errorf(ErrBadValue, "mode %q is more than 0777", s)
	}
	*m = FileMode(n)
	return nil
}

// UnmarshalTOML implements toml.Unmarshaler: an integer (write it in octal,
// 0o600) or an octal string ("0600").
func (m *FileMode) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		return m.UnmarshalText([]byte(x))
	case int64:
		if x < 0 {
			return errorf(ErrBadValue, "mode %d is negative", x)
		}
		if x > 0o777 {
			return errorf(ErrBadValue, "mode 0o%o is more than 0777", x)
		}
		*m = FileMode(x)
		return nil
	}
	return errorf(ErrWrongType, "want a mode such as 0o600 or \"0600\", got %s", tomlType(v))
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration like time.Duration ("5s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler ("5s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with
// time.ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return errorf(ErrWrongType, "%q is not a duration such as \"5s\" or \"1m30s\"", string(text))
	}
	*d = Duration(v)
	return nil
}

// UnmarshalTOML implements toml.Unmarshaler: only a duration string; a bare
// number is refused because its unit would be a guess.
func (d *Duration) UnmarshalTOML(v any) error {
	if s, ok := v.(string); ok {
		return d.UnmarshalText([]byte(s))
	}
	return errorf(ErrWrongType, "want a duration string such as \"5s\", got %s", tomlType(v))
}
