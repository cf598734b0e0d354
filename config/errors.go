package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pkg/errors"
)

// ErrInvalid is matched (errors.Is) by every error Parse and Validate return
// for a bad configuration: syntax, unknown keys, wrong types, bad values.
// Load's error for an unreadable file does not match it.
var ErrInvalid = errors.New("invalid configuration")

// Classes of configuration errors, for errors.Is; each also matches
// ErrInvalid.
var (
	// ErrSyntax is a TOML syntax error.
	ErrSyntax = errors.New("TOML syntax error")
	// ErrUnknownKey is a key the configuration does not have.
	ErrUnknownKey = errors.New("unknown key")
	// ErrWrongType is a value of the wrong TOML type or format.
	ErrWrongType = errors.New("wrong type")
	// ErrRequired is a required key that is missing or empty.
	ErrRequired = errors.New("required key missing")
	// ErrBadValue is a value of the right type that is not allowed.
	ErrBadValue = errors.New("value not allowed")
	// ErrDuplicateTag is a mount tag used twice.
	ErrDuplicateTag = errors.New("duplicate tag")
	// ErrUnknownPlaceholder is a {name} in daemon.args that Expand does not
	// know, or a '{' that starts no placeholder.
	ErrUnknownPlaceholder = errors.New("unknown placeholder")
)

// Error is one problem with one key.
type Error struct {
	// Key is the offending key as written in the file, with array
	// indexes: "socket_path", "mount[1].tag", "daemon.args[0]". Empty when
	// no key applies (some syntax errors).
	Key string
	// Line is the 1-based line of the key in the file; 0 when unknown (a
	// missing key, or a Config not read from a file).
	Line int
	// Err says what is wrong; it matches one of the Err* classes above.
	Err error
	// Source names the file (Load's path, Parse's source); empty for a
	// Config built in code.
	Source string
}

// Error formats as `config: key "mount[1].tag" (line 12): duplicate tag
// "data"`, with the source after "config: " when known.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	switch {
	case e.Key != "" && e.Line > 0:
		fmt.Fprintf(&b, "key %q (line %d): ", e.Key, e.Line)
	case e.Key != "":
		fmt.Fprintf(&b, "key %q: ", e.Key)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString(ErrInvalid.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Is makes every *Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// ErrorList is several problems, in the order found (file order for
// decoding problems). Parse and Validate return a single *Error when there
// is one problem and an ErrorList when there are more; errors.As finds the
// first *Error either way.
type ErrorList []*Error

// Error prints one problem per line.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// sortByLine orders the list by line, keys without a line last, then by
// key; the order of equal entries is kept.
func (l ErrorList) sortByLine() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i], l[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Key < b.Key
	})
}

// asError returns nil, the single *Error, or the ErrorList.
func (l ErrorList) asError() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	return l
}

// Compile-time checks: both error types work with errors.Is and As.
var (
	_ error                         = (*Error)(nil)
	_ interface{ Unwrap() error }   = (*Error)(nil)
	_ error                         = ErrorList(nil)
	_ interface{ Unwrap() []error } = ErrorList(nil)
	_ interface{ Is(error) bool }   = (*Error)(nil)
)

// classError is a message that belongs to one of the Err* classes; the
// message reads on its own and errors.Is finds the class.
type classError struct {
	class error
	msg   string
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// errorf builds a classError.
func errorf(class error, format string, args ...any) error {
	return &classError{class: class, msg: fmt.Sprintf(format, args...)}
}
