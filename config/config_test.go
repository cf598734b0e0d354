package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// env is a filesystem a test config can point at.
type env struct {
	dir    string // existing directory: shared_dir
	data   string // another existing directory: mount sources
	file   string // a regular file
	exe    string // an executable file (an external daemon)
	noexec string // a regular file without x bits
	sock   string // a socket path (not created)
}

func newEnv(t testing.TB) env {
	t.Helper()
	base := t.TempDir()
	e := env{
		dir:    filepath.Join(base, "shared"),
		data:   filepath.Join(base, "data"),
		file:   filepath.Join(base, "file"),
		exe:    filepath.Join(base, "daemon"),
		noexec: filepath.Join(base, "noexec"),
		sock:   filepath.Join(base, "run", "vm.sock"),
	}
	for _, d := range []string{e.dir, e.data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(e.file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// expand replaces $DIR, $DATA, $FILE, $EXE, $NOEXEC and $SOCK in a config
// template.
func (e env) expand(tmpl string) string {
	return strings.NewReplacer("$DIR", e.dir, "$DATA", e.data, "$FILE", e.file,
		"$EXE", e.exe, "$NOEXEC", e.noexec, "$SOCK", e.sock).Replace(tmpl)
}

// minimal is the smallest valid configuration.
const minimal = `socket_path = "$SOCK"
shared_dir = "$DIR"
`

func TestParseGood(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		toml  string
		check func(t *testing.T, c *Config)
	}{
		// Only the required keys: defaults everywhere else.
		{"minimal", minimal, func(t *testing.T, c *Config) {
			want := Default(e.dir, e.sock)
			c.index, c.source = nil, ""
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got %+v\nwant the defaults %+v", c, want)
			}
			if !c.IsBuiltinDaemon() {
				t.Error("no daemon.path, yet not the built-in daemon")
			}
			if got := c.LogFilePath(); got != e.sock+".log" {
				t.Errorf("LogFilePath = %q", got)
			}
		}},
		// Every scalar key set explicitly.
		{"explicit values", minimal + `socket_mode = "0660"
readonly = true
ready_timeout = "1m30s"
stop_timeout = "250ms"
log_file = "/var/log/vm.log"
sandbox = "chroot"
[log]
level = "debug"
format = "json"
[limits]
max_connections = 4
max_fids = 1000
max_inflight = 64
max_msize = 1048576
`, func(t *testing.T, c *Config) {
			if c.SocketMode != 0o660 || !c.ReadOnly || c.ReadyTimeout.D() != 90*time.Second ||
				c.StopTimeout.D() != 250*time.Millisecond || c.LogFilePath() != "/var/log/vm.log" ||
				c.Sandbox != SandboxChroot || c.Log != (Log{"debug", "json"}) ||
				c.Limits != (Limits{4, 1000, 64, 1 << 20}) {
				t.Errorf("got %+v", c)
			}
		}},
		// An integer mode in octal, and the smallest and largest msize.
		{"octal integer mode", minimal + "socket_mode = 0o640\n[limits]\nmax_msize = 8192\n", func(t *testing.T, c *Config) {
			if c.SocketMode != 0o640 || c.Limits.MaxMsize != MinMsize {
				t.Errorf("mode %v msize %d", c.SocketMode, c.Limits.MaxMsize)
			}
		}},
		// busy_poll: absent is nil (the daemon's default, see
		// "minimal"); "0s" (off) and the largest are kept as given.
		{"busy_poll off", minimal + "busy_poll = \"0s\"\n", func(t *testing.T, c *Config) {
			if c.BusyPoll == nil || *c.BusyPoll != 0 {
				t.Errorf("busy_poll %v, want 0s", c.BusyPoll)
			}
		}},
		{"busy_poll max", minimal + "busy_poll = \"1ms\"\n", func(t *testing.T, c *Config) {
			if c.BusyPoll == nil || c.BusyPoll.D() != MaxBusyPoll {
				t.Errorf("busy_poll %v, want 1ms", c.BusyPoll)
			}
		}},
		// Mode 0 is allowed (root only) and is not replaced by the
		// default.
		{"mode zero", minimal + "socket_mode = 0\n", func(t *testing.T, c *Config) {
			if c.SocketMode != 0 {
				t.Errorf("mode %v, want 0000", c.SocketMode)
			}
		}},
		// Mounts as an array of tables.
		{"mounts", minimal + `[[mount]]
tag = "data"
source = "$DATA"
readonly = true
[[mount]]
tag = "more"
source = "$DIR"
`, func(t *testing.T, c *Config) {
			want := []Mount{{Tag: "data", Source: e.data, ReadOnly: true}, {Tag: "more", Source: e.dir}}
			if !reflect.DeepEqual(c.Mounts, want) {
				t.Errorf("mounts %+v, want %+v", c.Mounts, want)
			}
		}},
		// Mounts as an inline array.
		{"inline mounts", minimal + `mount = [{tag = "a", source = "$DATA"}, {tag = "b", source = "$DIR"}]` + "\n",
			func(t *testing.T, c *Config) {
				if len(c.Mounts) != 2 || c.Mounts[1].Tag != "b" {
					t.Errorf("mounts %+v", c.Mounts)
				}
			}},
		// An external daemon with placeholders.
		{"external daemon", minimal + `[daemon]
path = "$EXE"
args = ["--fd={fd}", "-o", "source={shared_dir}"]
ready_line = "Waiting for vhost-user socket connection"
`, func(t *testing.T, c *Config) {
			if c.IsBuiltinDaemon() || c.Daemon.ReadyLine != "Waiting for vhost-user socket connection" {
				t.Errorf("daemon %+v", c.Daemon)
			}
		}},
		// The built-in daemon gets the default ready line; extra args
		// are allowed.
		{"built-in daemon args", minimal + "[daemon]\nargs = [\"--max-fids=10\"]\n", func(t *testing.T, c *Config) {
			if c.Daemon.ReadyLine != DefaultReadyLine || len(c.Daemon.Args) != 1 {
				t.Errorf("daemon %+v", c.Daemon)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(e.expand(tc.toml)), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after Parse: %v", err)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		toml  string
		key   string // the key the error names
		line  int    // its line; 0: no line expected
		class error  // the error class
	}{
		// Syntax: the parser's line is reported.
		{"syntax", minimal + "readonly = \n", "readonly", 3, ErrSyntax},
		// A key the configuration does not have.
		{"unknown key", minimal + "sockets = 1\n", "sockets", 3, ErrUnknownKey},
		// Keys are case-sensitive, though the TOML decoder is not.
		{"wrong case", minimal + "ReadOnly = true\n", "ReadOnly", 3, ErrUnknownKey},
		// An unknown table is one error naming the table.
		{"unknown table", minimal + "[logging]\nlevel = \"info\"\n", "logging", 3, ErrUnknownKey},
		// An unknown key inside a table.
		{"unknown nested key", minimal + "[daemon]\npth = \"/x\"\n", "daemon.pth", 4, ErrUnknownKey},
		// An unknown key in the second mount names its index.
		{"unknown mount key", minimal + "[[mount]]\ntag = \"a\"\nsource = \"$DATA\"\n[[mount]]\ntag = \"b\"\nsourse = \"$DATA\"\n",
			"mount[1].sourse", 8, ErrUnknownKey},
		// A string where a boolean goes.
		{"wrong type", minimal + "readonly = \"yes\"\n", "readonly", 3, ErrWrongType},
		// A value where a table goes.
		{"value for table", minimal + "log = \"debug\"\n", "log", 3, ErrWrongType},
		// A table where a value goes.
		{"table for value", "shared_dir = \"$DIR\"\n[socket_path]\nx = 1\n", "socket_path", 2, ErrWrongType},
		// An array element of the wrong type names its index.
		{"array element", minimal + "[daemon]\nargs = [\"a\",\n  2]\n", "daemon.args[1]", 5, ErrWrongType},
		// A float where an integer goes.
		{"float for int", minimal + "[limits]\nmax_fids = 1.5\n", "limits.max_fids", 4, ErrWrongType},
		// Out of uint32 range.
		{"msize overflow", minimal + "[limits]\nmax_msize = 8589934592\n", "limits.max_msize", 4, ErrBadValue},
		// A duration that does not parse.
		{"bad duration", minimal + "ready_timeout = \"5 seconds\"\n", "ready_timeout", 3, ErrWrongType},
		// A bare number is not a duration.
		{"integer duration", minimal + "stop_timeout = 5\n", "stop_timeout", 3, ErrWrongType},
		// Durations must be more than zero.
		{"zero duration", minimal + "ready_timeout = \"0s\"\n", "ready_timeout", 3, ErrBadValue},
		// Negative duration.
		{"negative duration", minimal + "stop_timeout = \"-1s\"\n", "stop_timeout", 3, ErrBadValue},
		// A mode written in decimal: 384 would silently be 0o600.
		{"decimal mode", minimal + "socket_mode = 384\n", "socket_mode", 3, ErrWrongType},
		// A mode string that is not octal.
		{"non-octal mode", minimal + "socket_mode = \"0689\"\n", "socket_mode", 3, ErrWrongType},
		// A mode above 0777.
		{"mode too big", minimal + "socket_mode = 0o4755\n", "socket_mode", 3, ErrBadValue},
		// A mode string above 0777.
		{"mode string too big", minimal + "socket_mode = \"1777\"\n", "socket_mode", 3, ErrBadValue},
		// A boolean mode.
		{"bool mode", minimal + "socket_mode = true\n", "socket_mode", 3, ErrWrongType},
		// socket_path missing.
		{"no socket_path", "shared_dir = \"$DIR\"\n", "socket_path", 0, ErrRequired},
		// socket_path relative.
		{"relative socket_path", "socket_path = \"run/vm.sock\"\nshared_dir = \"$DIR\"\n", "socket_path", 1, ErrBadValue},
		// socket_path not clean.
		{"unclean socket_path", "socket_path = \"/run//vm.sock\"\nshared_dir = \"$DIR\"\n", "socket_path", 1, ErrBadValue},
		// socket_path longer than sun_path.
		{"long socket_path", "socket_path = \"/" + strings.Repeat("s", 107) + "\"\nshared_dir = \"$DIR\"\n", "socket_path", 1, ErrBadValue},
		// shared_dir missing.
		{"no shared_dir", "socket_path = \"$SOCK\"\n", "shared_dir", 0, ErrRequired},
		// shared_dir relative.
		{"relative shared_dir", "socket_path = \"$SOCK\"\nshared_dir = \"shared\"\n", "shared_dir", 2, ErrBadValue},
		// shared_dir does not exist.
		{"missing shared_dir", "socket_path = \"$SOCK\"\nshared_dir = \"$DIR/none\"\n", "shared_dir", 2, ErrBadValue},
		// shared_dir is a file.
		{"file shared_dir", "socket_path = \"$SOCK\"\nshared_dir = \"$FILE\"\n", "shared_dir", 2, ErrBadValue},
		// log_file relative.
		{"relative log_file", minimal + "log_file = \"vm.log\"\n", "log_file", 3, ErrBadValue},
		// Not a sandbox mode.
		{"bad sandbox", minimal + "sandbox = \"jail\"\n", "sandbox", 3, ErrBadValue},
		// Not a log level.
		{"bad log level", minimal + "[log]\nlevel = \"verbose\"\n", "log.level", 4, ErrBadValue},
		// An explicitly empty log level is not the default.
		{"empty log level", minimal + "[log]\nlevel = \"\"\n", "log.level", 4, ErrBadValue},
		// Not a log format.
		{"bad log format", minimal + "[log]\nformat = \"xml\"\n", "log.format", 4, ErrBadValue},
		// daemon.path relative.
		{"relative daemon", minimal + "[daemon]\npath = \"virtiofsd\"\nready_line = \"x\"\n", "daemon.path", 4, ErrBadValue},
		// daemon.path missing.
		{"missing daemon", minimal + "[daemon]\npath = \"$DIR/none\"\nready_line = \"x\"\n", "daemon.path", 4, ErrBadValue},
		// daemon.path not executable.
		{"daemon not executable", minimal + "[daemon]\npath = \"$NOEXEC\"\nready_line = \"x\"\n", "daemon.path", 4, ErrBadValue},
		// daemon.path a directory.
		{"daemon directory", minimal + "[daemon]\npath = \"$DIR\"\nready_line = \"x\"\n", "daemon.path", 4, ErrBadValue},
		// An external daemon needs its ready line (pointed at [daemon]).
		{"no ready_line", minimal + "[daemon]\npath = \"$EXE\"\n", "daemon.ready_line", 3, ErrRequired},
		// A ready line spanning lines can never match.
		{"multi-line ready_line", minimal + "[daemon]\nready_line = \"a\\nb\"\n", "daemon.ready_line", 4, ErrBadValue},
		// An unknown placeholder names the argument.
		{"unknown placeholder", minimal + "[daemon]\nargs = [\"--fd={fd}\", \"--tag={tag}\"]\n", "daemon.args[1]", 4, ErrUnknownPlaceholder},
		// An unterminated placeholder.
		{"unterminated placeholder", minimal + "[daemon]\nargs = [\"{fd\"]\n", "daemon.args[0]", 4, ErrUnknownPlaceholder},
		// no_setuid is the built-in daemon's: an external one is told
		// through its own arguments.
		{"no_setuid, external daemon", minimal + "no_setuid = true\n[daemon]\npath = \"$EXE\"\nready_line = \"x\"\n", "no_setuid", 3, ErrBadValue},
		// busy_poll: a duration string from 0 to 1ms, the built-in
		// daemon's only.
		{"busy_poll too long", minimal + "busy_poll = \"2ms\"\n", "busy_poll", 3, ErrBadValue},
		{"busy_poll negative", minimal + "busy_poll = \"-1us\"\n", "busy_poll", 3, ErrBadValue},
		{"busy_poll a number", minimal + "busy_poll = 50\n", "busy_poll", 3, ErrWrongType},
		{"busy_poll, external daemon", minimal + "busy_poll = \"10us\"\n[daemon]\npath = \"$EXE\"\nready_line = \"x\"\n", "busy_poll", 3, ErrBadValue},
		// Negative limits.
		{"negative limit", minimal + "[limits]\nmax_inflight = -1\n", "limits.max_inflight", 4, ErrBadValue},
		// msize below 8192.
		{"small msize", minimal + "[limits]\nmax_msize = 4096\n", "limits.max_msize", 4, ErrBadValue},
		// msize above 16 MiB.
		{"big msize", minimal + "[limits]\nmax_msize = 16777217\n", "limits.max_msize", 4, ErrBadValue},
		// A mount without a tag (pointed at its [[mount]] line).
		{"empty tag", minimal + "[[mount]]\nsource = \"$DATA\"\n", "mount[0].tag", 3, ErrRequired},
		// "/" is the root export's aname.
		{"slash tag", minimal + "[[mount]]\ntag = \"/\"\nsource = \"$DATA\"\n", "mount[0].tag", 4, ErrBadValue},
		// ',' would break the --mount flag.
		{"comma tag", minimal + "[[mount]]\ntag = \"a,b\"\nsource = \"$DATA\"\n", "mount[0].tag", 4, ErrBadValue},
		// '=' would break the --mount flag.
		{"equals tag", minimal + "[[mount]]\ntag = \"a=b\"\nsource = \"$DATA\"\n", "mount[0].tag", 4, ErrBadValue},
		// White space in a tag.
		{"space tag", minimal + "[[mount]]\ntag = \"a b\"\nsource = \"$DATA\"\n", "mount[0].tag", 4, ErrBadValue},
		// NUL in a tag.
		{"nul tag", minimal + "[[mount]]\ntag = \"a\\u0000b\"\nsource = \"$DATA\"\n", "mount[0].tag", 4, ErrBadValue},
		// The same tag twice: the second names the first.
		{"duplicate tag", minimal + "[[mount]]\ntag = \"data\"\nsource = \"$DATA\"\n\n[[mount]]\ntag = \"data\"\nsource = \"$DIR\"\n",
			"mount[1].tag", 8, ErrDuplicateTag},
		// One share group for two different sources.
		{"share group, two sources", minimal + "[[mount]]\ntag = \"a\"\nsource = \"$DATA\"\nshare = \"vol\"\n\n[[mount]]\ntag = \"b\"\nsource = \"$DIR\"\nshare = \"vol\"\n",
			"mount[1].share", 11, ErrBadValue},
		// One share group, read-only and read-write.
		{"share group, two modes", minimal + "[[mount]]\ntag = \"a\"\nsource = \"$DATA\"\nshare = \"vol\"\n\n[[mount]]\ntag = \"b\"\nsource = \"$DATA\"\nreadonly = true\nshare = \"vol\"\n",
			"mount[1].share", 12, ErrBadValue},
		// A share group breaking the --mount flag.
		{"share group with ','", minimal + "[[mount]]\ntag = \"a\"\nsource = \"$DATA\"\nshare = \"v,ol\"\n", "mount[0].share", 6, ErrBadValue},
		// A mount without a source.
		{"no source", minimal + "[[mount]]\ntag = \"a\"\n", "mount[0].source", 3, ErrRequired},
		// A relative source.
		{"relative source", minimal + "[[mount]]\ntag = \"a\"\nsource = \"data\"\n", "mount[0].source", 5, ErrBadValue},
		// A source that is a file.
		{"file source", minimal + "[[mount]]\ntag = \"a\"\nsource = \"$FILE\"\n", "mount[0].source", 5, ErrBadValue},
		// Mounts with an external daemon would be silently ignored.
		{"mounts with external daemon", minimal + "[daemon]\npath = \"$EXE\"\nready_line = \"x\"\n[[mount]]\ntag = \"a\"\nsource = \"$DATA\"\n",
			"mount[0]", 6, ErrBadValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(e.expand(tc.toml)), "bad.toml")
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			t.Log(err)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			if !errors.Is(err, tc.class) {
				t.Errorf("error %v does not match %v", err, tc.class)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v holds no *Error", err)
			}
			if ce.Key != tc.key || ce.Line != tc.line || ce.Source != "bad.toml" {
				t.Errorf("*Error key %q line %d source %q; want key %q line %d", ce.Key, ce.Line, ce.Source, tc.key, tc.line)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("key %q", tc.key)) || !strings.Contains(err.Error(), "bad.toml") {
				t.Errorf("message %q does not name key %q and the source", err, tc.key)
			}
		})
	}
}

// TestParseReportsEveryProblem: several problems come back together, in
// file order, each with its own key.
func TestParseReportsEveryProblem(t *testing.T) {
	cases := []struct {
		name string
		toml string
		keys []string
	}{
		// Decoding problems, one per key, sorted by line.
		{"decoding", `bogus = 1
socket_mode = "rw"
[daemon]
args = [1, "x", 2]
[[mount]]
tag = 5
`, []string{"bogus", "socket_mode", "daemon.args[0]", "daemon.args[2]", "mount[0].tag"}},
		// Validation problems, the missing keys (no line) last.
		{"validation", `sandbox = "x"
[log]
level = "loud"
`, []string{"sandbox", "log.level", "shared_dir", "socket_path"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml), "many.toml")
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %v is not an ErrorList", err)
			}
			var keys []string
			for _, e := range list {
				keys = append(keys, e.Key)
			}
			if fmt.Sprint(keys) != fmt.Sprint(tc.keys) {
				t.Errorf("keys %q, want %q", keys, tc.keys)
			}
			if n := strings.Count(err.Error(), "\n"); n != len(tc.keys)-1 {
				t.Errorf("message has %d lines, want one per problem:\n%v", n+1, err)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	dup := errorf(ErrDuplicateTag, "duplicate tag %q", "data")
	cases := []struct {
		name string
		err  *Error
		want string
	}{
		// The documented form.
		{"key and line", &Error{Key: "mount[1].tag", Line: 12, Err: dup}, `config: key "mount[1].tag" (line 12): duplicate tag "data"`},
		// Line 0 means unknown and is not printed.
		{"key only", &Error{Key: "socket_path", Err: errorf(ErrRequired, "is required")}, `config: key "socket_path": is required`},
		// A syntax error may have only a line.
		{"line only", &Error{Line: 3, Err: errorf(ErrSyntax, "bad")}, `config: line 3: bad`},
		// The source goes after "config: ".
		{"source", &Error{Key: "x", Line: 1, Err: dup, Source: "/etc/vm.toml"}, `config: /etc/vm.toml: key "x" (line 1): duplicate tag "data"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if !errors.Is(tc.err, ErrInvalid) || !errors.Is(tc.err, tc.err.Err) {
				t.Error("*Error does not match ErrInvalid and its Err")
			}
		})
	}
}

func TestValidateInCode(t *testing.T) {
	e := newEnv(t)
	if err := Default(e.dir, e.sock).Validate(); err != nil {
		t.Fatalf("Default(...).Validate() = %v", err)
	}
	c := Default(e.dir, e.sock)
	c.Mounts = []Mount{{Tag: "a", Source: e.data}, {Tag: "a", Source: e.data}}
	err := c.Validate()
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 0 || ce.Source != "" {
		t.Fatalf("Validate = %v", err)
	}
	if want := `config: key "mount[1].tag": duplicate tag "a" (also mount[0].tag)`; err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	// A mode set in code above 0777.
	c = Default(e.dir, e.sock)
	c.SocketMode = 0o1777
	if err := c.Validate(); !errors.As(err, &ce) || ce.Key != "socket_mode" {
		t.Errorf("Validate(mode 01777) = %v", err)
	}
}

func TestExpand(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		args []string
		want []string
		key  string // error key; "" for success
	}{
		// No placeholders: passed exactly as written, nothing added.
		{"verbatim", []string{"--socket-path=/x", "-o", "cache=auto", "}", "a}b"}, []string{"--socket-path=/x", "-o", "cache=auto", "}", "a}b"}, ""},
		// Each placeholder, alone and inside an argument.
		{"all placeholders", []string{"{fd}", "--fd={fd}", "{socket_path}", "source={shared_dir}", "ro={readonly}", "{log_level}"},
			[]string{"3", "--fd=3", e.sock, "source=" + e.dir, "ro=true", "debug"}, ""},
		// "{{" is a literal "{", also before a placeholder name.
		{"escape", []string{"{{fd}", "{{{fd}", "a{{b"}, []string{"{fd}", "{3", "a{b"}, ""},
		// An empty list stays empty.
		{"empty", nil, []string{}, ""},
		// Unknown placeholder: the error names the argument.
		{"unknown", []string{"ok", "{nope}"}, nil, "daemon.args[1]"},
		// An empty name is unknown.
		{"empty name", []string{"{}"}, nil, "daemon.args[0]"},
		// A '{' that never closes.
		{"unterminated", []string{"{fd"}, nil, "daemon.args[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default(e.dir, e.sock)
			c.ReadOnly = true
			c.Log.Level = "debug"
			c.Daemon.Args = tc.args
			got, err := c.Expand(3)
			if tc.key != "" {
				var ce *Error
				if !errors.As(err, &ce) || ce.Key != tc.key || !errors.Is(err, ErrUnknownPlaceholder) {
					t.Fatalf("Expand error %v, want one naming %s", err, tc.key)
				}
				if verr := c.Validate(); !errors.Is(verr, ErrUnknownPlaceholder) {
					t.Errorf("Validate did not report it: %v", verr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Expand = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte(e.expand(minimal)), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(e.expand(minimal+"x = 1\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(good); err != nil {
		t.Errorf("Load(good) = %v", err)
	}
	_, err := Load(bad)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), bad) {
		t.Errorf("Load(bad) = %v; want ErrInvalid naming the file", err)
	}
	missing := filepath.Join(dir, "none.toml")
	_, err = Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing) = %v; want ErrNotExist naming the file, not ErrInvalid", err)
	}
}

func TestFileModeAndDuration(t *testing.T) {
	modes := []struct {
		text string
		want FileMode
		ok   bool
	}{
		{"0600", 0o600, true}, // the usual form
		{"600", 0o600, true},  // without the leading zero
		{"0o640", 0o640, true},
		{"0", 0, true},
		{"0777", 0o777, true},
		{"1000", 0, false}, // sticky bit: more than 0777
		{"68", 0, false},   // not octal
		{"", 0, false},     // empty
		{"-1", 0, false},   // negative
		{"0o", 0, false},   // prefix only
	}
	for _, m := range modes {
		var got FileMode
		err := got.UnmarshalText([]byte(m.text))
		if (err == nil) != m.ok || m.ok && got != m.want {
			t.Errorf("FileMode.UnmarshalText(%q) = %v, %v; want %v ok=%v", m.text, got, err, m.want, m.ok)
		}
	}
	if s := FileMode(0o600).String(); s != "0600" {
		t.Errorf("String = %q", s)
	}
	if s := FileMode(0o7).String(); s != "0007" {
		t.Errorf("String = %q", s)
	}
	if p := FileMode(0o640).Perm(); p != 0o640 {
		t.Errorf("Perm = %v", p)
	}
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.D() != 90*time.Second || d.String() != "1m30s" {
		t.Errorf("Duration = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("5")); err == nil {
		t.Error("Duration accepted a number without unit")
	}
	// A Config written back as TOML parses to the same values.
	e := newEnv(t)
	c := Default(e.dir, e.sock)
	c.SocketMode = 0o640
	c.ReadyTimeout = Duration(1500 * time.Millisecond)
	var buf strings.Builder
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		t.Fatal(err)
	}
	back, err := Parse([]byte(buf.String()), "encoded")
	if err != nil {
		t.Fatalf("Parse(encoded) = %v\n%s", err, buf.String())
	}
	if back.SocketMode != c.SocketMode || back.ReadyTimeout != c.ReadyTimeout {
		t.Errorf("round trip: %v %v", back.SocketMode, back.ReadyTimeout)
	}
}

func TestKeyIndex(t *testing.T) {
	src := `# comment with [brackets] and key = "value"
a = 1
"quoted key" = 2
b.c = 3      # dotted
s = """
multi
line"""
after_multi = 4
lit = '''
x'''
arr = [
  "x", # comment
  { k = 1 },
]
t = { x = 1, y = { z = 2 } }

[tbl]
k = "v"

[[mount]]
tag = "a"
[[mount]]
tag = "b"
[mount.sub]
q = 1
`
	want := map[string]int{
		"a":                2,
		`"quoted key"`:     3,
		"b":                4,
		"b.c":              4,
		"s":                5,
		"after_multi":      8,
		"lit":              9,
		"arr":              11,
		"arr[0]":           12,
		"arr[1]":           13,
		"arr[1].k":         13,
		"t.x":              15,
		"t.y.z":            15,
		"tbl":              17,
		"tbl.k":            18,
		"mount":            20,
		"mount[0]":         20,
		"mount[0].tag":     21,
		"mount[1]":         22,
		"mount[1].tag":     23,
		"mount[1].sub":     24,
		"mount[1].sub.q":   25,
		"mount[1].missing": 22, // falls back to its table
		"nothing":          0,
	}
	if _, err := toml.Decode(src, new(map[string]any)); err != nil {
		t.Fatalf("the test document is not valid TOML: %v", err)
	}
	ix := indexKeys(src)
	for k, l := range want {
		if got := ix.line(k); got != l {
			t.Errorf("line(%s) = %d, want %d", k, got, l)
		}
	}
	if ix.raw["a"] != "1" || ix.raw["arr[1].k"] != "1" {
		t.Errorf("raw values: %q", ix.raw)
	}
}

// schemaKeys lists every key of the Config type in canonical form, arrays
// of tables with index 0.
func schemaKeys(prefix string, t reflect.Type) []string {
	var out []string
	for name, ft := range fieldsOf(t) {
		key := joinKey(prefix, name)
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, schemaKeys(key, ft)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, schemaKeys(indexKey(key, 0), ft.Elem())...)
		default:
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out
}

// TestExampleConfig parses testdata/example.toml with its /tmp/fsd-example
// paths moved to a temporary directory, and checks that it shows every key
// (in use, or in a commented-out example line).
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for _, d := range []string{"shared", "data"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.ReplaceAll(string(data), "/tmp/fsd-example", base)
	c, err := Parse([]byte(text), "example.toml")
	if err != nil {
		t.Fatalf("example.toml does not pass: %v", err)
	}
	if len(c.Mounts) != 1 || c.SharedDir != filepath.Join(base, "shared") {
		t.Errorf("example parsed to %+v", c)
	}
	// Keys in use, plus keys in commented-out "#     key = value" lines
	// (the external daemon example), read in their table.
	uncommented := regexp.MustCompile(`(?m)^#\s+([a-z_]+\s*=.*)$`).ReplaceAllString(string(data), "$1")
	shown := map[string]bool{}
	for k := range indexKeys(string(data)).lines {
		shown[k] = true
	}
	for k := range indexKeys(uncommented).lines {
		shown[k] = true
	}
	for _, k := range schemaKeys("", reflect.TypeOf(Config{})) {
		if !shown[k] {
			t.Errorf("example.toml does not show key %s", k)
		}
	}
}
