package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse. It must never panic, and every
// error must be a configuration error that names the source and, in each
// of its parts, a key or a line.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../testdata/example.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("socket_path = \"/tmp/s.sock\"\nshared_dir = \"/tmp\"\n[[mount]]\ntag = \"a\"\nsource = \"/tmp\"\n"))
	f.Add([]byte("mount = [{tag = \"a\", source = \"/\"}]\n[daemon]\nargs = [\"{fd}\", \"{{\", \"{x\"]\n"))
	f.Add([]byte("socket_mode = 384\nready_timeout = 5\n[log]\nlevel = 1\n"))
	f.Add([]byte("a = \"\"\"\nx\n\"\"\"\nb = '''\ny'''\n[t]\nk = { x = [1, {y = 2}] }\n"))
	const source = "fuzz.toml"
	f.Fuzz(func(t *testing.T, data []byte) {
		// The key index must cope with anything, valid TOML or not.
		ix := indexKeys(string(data))
		lines := strings.Count(string(data), "\n") + 1
		for k, l := range ix.lines {
			if l < 1 || l > lines {
				t.Fatalf("key %s at line %d of %d", k, l, lines)
			}
		}

		c, err := Parse(data, source)
		if err == nil {
			if c == nil {
				t.Fatal("no error and no config")
			}
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config that Validate rejects: %v", verr)
			}
			return
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not match ErrInvalid", err)
		}
		if !strings.Contains(err.Error(), source) {
			t.Fatalf("error %q does not name the source", err)
		}
		var parts []*Error
		var list ErrorList
		var one *Error
		switch {
		case errors.As(err, &list):
			parts = list
		case errors.As(err, &one):
			parts = []*Error{one}
		default:
			t.Fatalf("error %v holds no *Error", err)
		}
		for _, p := range parts {
			if p.Source != source {
				t.Fatalf("part %q has source %q", p, p.Source)
			}
			if p.Key == "" && p.Line == 0 {
				t.Fatalf("part %q names neither a key nor a line", p)
			}
			if p.Line < 0 || p.Line > lines {
				t.Fatalf("part %q names line %d of %d", p, p.Line, lines)
			}
		}
	})
}
