package config

import (
	"sort"
	"strconv"
	"strings"
)

// Placeholders Expand fills in daemon.args. Each is replaced wherever it
// appears in an argument ("--fd={fd}" works); "{{" is a literal "{"; any
// other "{name}" is an error. An argument without '{' is passed exactly as
// written, and nothing is ever added to the list.
const (
	// PlaceholderFD is the number of the fd the daemon inherits the
	// listening socket on (3).
	PlaceholderFD = "fd"
	// PlaceholderSocketPath is socket_path.
	PlaceholderSocketPath = "socket_path"
	// PlaceholderSharedDir is shared_dir.
	PlaceholderSharedDir = "shared_dir"
	// PlaceholderReadOnly is readonly as "true" or "false".
	PlaceholderReadOnly = "readonly"
	// PlaceholderLogLevel is log.level.
	PlaceholderLogLevel = "log_level"
)

// placeholderNames lists the placeholders for messages.
func placeholderNames() string {
	names := []string{PlaceholderFD, PlaceholderSocketPath, PlaceholderSharedDir, PlaceholderReadOnly, PlaceholderLogLevel}
	sort.Strings(names)
	for i, n := range names {
		names[i] = "{" + n + "}"
	}
	return strings.Join(names, ", ")
}

// Expand returns daemon.args with placeholders filled in, fd being the fd
// number the daemon inherits the listening socket on. For an external
// daemon the result is its whole argv[1:]; for the built-in daemon the
// launcher appends it after the serve flags it generates. An unknown
// placeholder is an *Error naming daemon.args[i] (Validate reports it too).
func (c *Config) Expand(fd int) ([]string, error) {
	vals := map[string]string{
		PlaceholderFD:         strconv.Itoa(fd),
		PlaceholderSocketPath: c.SocketPath,
		PlaceholderSharedDir:  c.SharedDir,
		PlaceholderReadOnly:   strconv.FormatBool(c.ReadOnly),
		PlaceholderLogLevel:   c.Log.Level,
	}
	out := make([]string, 0, len(c.Daemon.Args))
	for i, a := range c.Daemon.Args {
		s, err := expandArg(a, vals)
		if err != nil {
			key := indexKey("daemon.args", i)
			return nil, &Error{Key: key, Line: c.index.line(key), Err: err, Source: c.source}
		}
		out = append(out, s)
	}
	return out, nil
}

// expandArg fills the placeholders of one argument. With vals nil it only
// checks the syntax and the names.
func expandArg(a string, vals map[string]string) (string, error) {
	if strings.IndexByte(a, '{') < 0 {
		return a, nil
	}
	var b strings.Builder
	for i := 0; i < len(a); {
		c := a[i]
		if c != '{' {
			b.WriteByte(c)
			i++
			continue
		}
		if strings.HasPrefix(a[i:], "{{") {
			b.WriteByte('{')
			i += 2
			continue
		}
		end := strings.IndexByte(a[i:], '}')
		if end < 0 {
			return "", errorf(ErrUnknownPlaceholder, "unterminated placeholder in %q; write \"{{\" for a literal \"{\"", a)
		}
		name := a[i+1 : i+end]
		if !knownPlaceholder(name) {
			return "", errorf(ErrUnknownPlaceholder, "unknown placeholder %q in %q (known: %s; write \"{{\" for a literal \"{\")", "{"+name+"}", a, placeholderNames())
		}
		b.WriteString(vals[name])
		i += end + 1
	}
	return b.String(), nil
}

func knownPlaceholder(name string) bool {
	switch name {
	case PlaceholderFD, PlaceholderSocketPath, PlaceholderSharedDir, PlaceholderReadOnly, PlaceholderLogLevel:
		return true
	}
	return false
}
