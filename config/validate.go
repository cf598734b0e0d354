package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Limits enforced by Validate.
const (
	// MaxSocketPathLen is the longest socket path bind(2) takes: sun_path
	// holds 108 bytes including the NUL.
	MaxSocketPathLen = 107
	// MinMsize and MaxMsize bound limits.max_msize when it is set.
	MinMsize = 8192
	MaxMsize = 16 << 20
	// MaxBusyPoll bounds busy_poll (as server.MaxBusyPoll does).
	MaxBusyPoll = time.Millisecond
	// MaxReadyLineLen bounds daemon.ready_line, well under the bytes the
	// launcher keeps per line of the daemon's output.
	MaxReadyLineLen = 1024
)

// Allowed values of the enumerated keys.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
	sandboxes  = []string{SandboxAuto, SandboxNamespace, SandboxChroot, SandboxNone}
)

// quotedNames lists allowed values for a message.
func quotedNames(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// Validate checks every rule a configuration must satisfy before anything
// is started, and reports every violation (one *Error, or an ErrorList),
// each naming its key; each matches ErrInvalid. It looks at the filesystem:
// shared_dir and mount sources must be existing directories, daemon.path an
// executable file.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.socket()
	v.sharedDir()
	if c.ReadyTimeout <= 0 {
		v.bad("ready_timeout", ErrBadValue, "must be more than 0, got %v", c.ReadyTimeout)
	}
	if c.StopTimeout <= 0 {
		v.bad("stop_timeout", ErrBadValue, "must be more than 0, got %v", c.StopTimeout)
	}
	if c.LogFile != "" {
		v.absolute("log_file", c.LogFile)
	}
	if c.BusyPoll != nil {
		switch d := c.BusyPoll.D(); {
		case d < 0 || d > MaxBusyPoll:
			v.bad("busy_poll", ErrBadValue, "want \"0s\" (off) to %q, got %q", MaxBusyPoll.String(), d.String())
		case !c.IsBuiltinDaemon():
			v.bad("busy_poll", ErrBadValue, "applies to the built-in daemon only; pass an external daemon's own option in daemon.args")
		}
	}
	v.oneOf("sandbox", c.Sandbox, sandboxes)
	v.oneOf("log.level", c.Log.Level, logLevels)
	v.oneOf("log.format", c.Log.Format, logFormats)
	v.daemon()
	v.limits()
	v.mounts()
	v.errs.sortByLine()
	for _, e := range v.errs {
		e.Source = c.source
	}
	return v.errs.asError()
}

// validator collects Validate's errors.
type validator struct {
	c    *Config
	errs ErrorList
}

func (v *validator) bad(key string, class error, format string, args ...any) {
	v.errs = append(v.errs, &Error{Key: key, Line: v.c.index.line(key), Err: errorf(class, format, args...)})
}

func (v *validator) oneOf(key, val string, allowed []string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.bad(key, ErrBadValue, "%q is not one of %s", val, quotedNames(allowed))
}

// absolute checks that path is absolute and reports whether it is.
func (v *validator) absolute(key, path string) bool {
	if !filepath.IsAbs(path) {
		v.bad(key, ErrBadValue, "path %q is not absolute", path)
		return false
	}
	if strings.IndexByte(path, 0) >= 0 {
		v.bad(key, ErrBadValue, "path %q contains a NUL byte", path)
		return false
	}
	return true
}

// existingDir checks that path is an absolute path to an existing
// directory.
func (v *validator) existingDir(key, path string) {
	if path == "" {
		v.bad(key, ErrRequired, "is required")
		return
	}
	if !v.absolute(key, path) {
		return
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		v.bad(key, ErrBadValue, "directory %s: %v", path, unwrapPathError(err))
	case !fi.IsDir():
		v.bad(key, ErrBadValue, "%s is not a directory", path)
	}
}

// unwrapPathError drops the *PathError's repetition of the path.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (v *validator) socket() {
	c := v.c
	switch {
	case c.SocketPath == "":
		v.bad("socket_path", ErrRequired, "is required")
	case !v.absolute("socket_path", c.SocketPath):
	case filepath.Clean(c.SocketPath) != c.SocketPath:
		v.bad("socket_path", ErrBadValue, "path %q is not clean (it means %q)", c.SocketPath, filepath.Clean(c.SocketPath))
	case len(c.SocketPath) > MaxSocketPathLen:
		v.bad("socket_path", ErrBadValue, "path is %d bytes, a unix socket path holds at most %d", len(c.SocketPath), MaxSocketPathLen)
	}
	if c.SocketMode > 0o777 {
		v.bad("socket_mode", ErrBadValue, "mode %s is more than 0777", c.SocketMode)
	}
}

func (v *validator) sharedDir() {
	v.existingDir("shared_dir", v.c.SharedDir)
}

func (v *validator) daemon() {
	d := v.c.Daemon
	if d.Path != "" && v.absolute("daemon.path", d.Path) {
		fi, err := os.Stat(d.Path)
		switch {
		case err != nil:
			v.bad("daemon.path", ErrBadValue, "daemon %s: %v", d.Path, unwrapPathError(err))
		case !fi.Mode().IsRegular():
			v.bad("daemon.path", ErrBadValue, "daemon %s is not a regular file", d.Path)
		case unix.Access(d.Path, unix.X_OK) != nil || fi.Mode().Perm()&0o111 == 0:
			v.bad("daemon.path", ErrBadValue, "daemon %s is not executable", d.Path)
		}
	}
	switch {
	case d.ReadyLine == "" && d.Path != "":
		v.bad("daemon.ready_line", ErrRequired, "is required with daemon.path: the text on the daemon's stderr that means it is ready")
	case d.ReadyLine == "":
		// Built-in daemon: Parse fills in DefaultReadyLine.
		v.bad("daemon.ready_line", ErrRequired, "is empty (the built-in daemon's is %q)", DefaultReadyLine)
	case strings.ContainsAny(d.ReadyLine, "\n\r"):
		v.bad("daemon.ready_line", ErrBadValue, "contains a line break; output is matched one line at a time")
	case len(d.ReadyLine) > MaxReadyLineLen:
		v.bad("daemon.ready_line", ErrBadValue, "is %d bytes, at most %d", len(d.ReadyLine), MaxReadyLineLen)
	}
	for i, a := range d.Args {
		if _, err := expandArg(a, nil); err != nil {
			key := indexKey("daemon.args", i)
			v.errs = append(v.errs, &Error{Key: key, Line: v.c.index.line(key), Err: err})
		}
	}
}

func (v *validator) limits() {
	l := v.c.Limits
	for _, f := range []struct {
		key string
		val int
	}{
		{"limits.max_connections", l.MaxConnections},
		{"limits.max_fids", l.MaxFids},
		{"limits.max_inflight", l.MaxInflight},
	} {
		if f.val < 0 {
			v.bad(f.key, ErrBadValue, "must not be negative, got %d", f.val)
		}
	}
	if l.MaxMsize != 0 && (l.MaxMsize < MinMsize || l.MaxMsize > MaxMsize) {
		v.bad("limits.max_msize", ErrBadValue, "%d is not 0 (the default) or in [%d, %d]", l.MaxMsize, MinMsize, MaxMsize)
	}
}

func (v *validator) mounts() {
	c := v.c
	if c.NoSetuid && !c.IsBuiltinDaemon() {
		v.bad("no_setuid", ErrBadValue, "applies to the built-in daemon only; pass an external daemon's own option in daemon.args")
	}
	if len(c.Mounts) > 0 && !c.IsBuiltinDaemon() {
		v.bad("mount[0]", ErrBadValue, "mounts are served by the built-in daemon only; pass an external daemon's exports in daemon.args")
	}
	first := map[string]int{} // tag -> index of its first use
	group := map[string]int{} // share group -> index of its first mount
	for i, m := range c.Mounts {
		base := indexKey("mount", i)
		tagKey := base + ".tag"
		if msg := badTag(m.Tag); msg != "" {
			if m.Tag == "" {
				v.bad(tagKey, ErrRequired, "%s", msg)
			} else {
				v.bad(tagKey, ErrBadValue, "%s", msg)
			}
		} else if j, dup := first[m.Tag]; dup {
			v.bad(tagKey, ErrDuplicateTag, "duplicate tag %q (also mount[%d].tag)", m.Tag, j)
		} else {
			first[m.Tag] = i
		}
		srcKey := base + ".source"
		v.existingDir(srcKey, m.Source)
		if strings.IndexByte(m.Source, ',') >= 0 {
			v.bad(srcKey, ErrBadValue, "path %q contains ',', which the daemon's --mount flag uses as a separator", m.Source)
		}
		if m.Share == "" {
			continue
		}
		shareKey := base + ".share"
		if msg := badTag(m.Share); msg != "" {
			v.bad(shareKey, ErrBadValue, "share group %s", strings.TrimPrefix(msg, "tag "))
		} else if j, ok := group[m.Share]; ok && (c.Mounts[j].Source != m.Source || c.Mounts[j].ReadOnly != m.ReadOnly) {
			v.bad(shareKey, ErrBadValue, "share group %q is mount[%d]'s (source %q, readonly %v): a group serves one source with one mode",
				m.Share, j, c.Mounts[j].Source, c.Mounts[j].ReadOnly)
		} else if !ok {
			group[m.Share] = i
		}
	}
}

// badTag says what is wrong with a mount tag, or "".
func badTag(tag string) string {
	switch tag {
	case "":
		return "is required: the aname the guest attaches with"
	case "/":
		return `"/" names the root export`
	}
	for _, r := range tag {
		switch {
		case r == ',' || r == '=':
			return "tag " + strconv.Quote(tag) + " contains " + strconv.QuoteRune(r) + ", which the daemon's --mount flag uses as a separator"
		case r == 0:
			return "tag " + strconv.Quote(tag) + " contains a NUL byte"
		case unicode.IsSpace(r):
			return "tag " + strconv.Quote(tag) + " contains white space"
		case unicode.IsControl(r):
			return "tag " + strconv.Quote(tag) + " contains a control character"
		}
	}
	return ""
}
