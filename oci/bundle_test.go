package oci

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// testdata returns the absolute path of a file under testdata.
func testdata(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readMarker returns the content of dir/marker: the testdata bundles put
// one in every directory, so a test can tell directories apart by content
// and not only by path.
func readMarker(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "marker"))
	if err != nil {
		t.Fatalf("marker of %s: %v", dir, err)
	}
	return strings.TrimSpace(string(b))
}

func TestLoadBundleTestdata(t *testing.T) {
	type exp struct {
		Export
		marker string // content of Source/marker
	}
	ex := func(tag, source string, ro bool, mount int, marker string) exp {
		return exp{Export: Export{Tag: tag, Source: source, ReadOnly: ro, Mount: mount, Share: ShareContainer}, marker: marker}
	}
	for _, tc := range []struct {
		name     string
		dir      string
		root     string
		rootRO   bool
		exports  []exp
		unserved map[int]string // mount index -> reason
	}{
		{
			// Root only: one export, the root, read-write, resolved against the
			// bundle (the test's cwd is oci/, where "rootfs" does not exist).
			name: "root only",
			dir:  "root-only",
			root: "root-only/rootfs",
			exports: []exp{
				ex("/", testdata(t, "root-only/rootfs"), false, RootMount, "root-only"),
			},
		},
		{
			// root.readonly makes the root export read-only.
			name:   "read-only root",
			dir:    "readonly-root",
			root:   "readonly-root/rootfs",
			rootRO: true,
			exports: []exp{
				ex("/", testdata(t, "readonly-root/rootfs"), true, RootMount, "readonly-root"),
			},
		},
		{
			// Bind mounts by type "bind" or by option bind/rbind (type "none" or
			// absent), in spec order; "ro" makes read-only and the last of
			// ro/rw wins; a destination is cleaned ("/cache/") and made
			// absolute ("logs"); "/data" and "/data/sub" are separate exports.
			// proc, tmpfs, sysfs, mqueue are not served, nor a file bind.
			name: "several binds",
			dir:  "binds",
			root: "binds/rootfs",
			exports: []exp{
				ex("/", testdata(t, "binds/rootfs"), false, RootMount, "binds"),
				ex("/data", testdata(t, "binds/volumes/data"), false, 2, "data"),
				ex("/etc/config", testdata(t, "binds/volumes/config"), true, 3, "config"),
				ex("/data/sub", testdata(t, "binds/volumes/sub"), false, 4, "sub"),
				ex("/cache", testdata(t, "binds/volumes/cache"), false, 6, "cache"),
				ex("/logs", testdata(t, "binds/volumes/logs"), true, 7, "logs"),
			},
			unserved: map[int]string{0: ReasonNotBind, 1: ReasonNotBind, 5: ReasonNotBind, 8: ReasonFileBind, 9: ReasonNotBind},
		},
		{
			// Relative root and sources with "." and ".." resolve against the
			// bundle directory, even when they leave it (the bundle is trusted).
			name: "relative paths",
			dir:  "relative",
			root: "relative/layers/top",
			exports: []exp{
				ex("/", testdata(t, "relative/layers/top"), false, RootMount, "relative"),
				ex("/shared", testdata(t, "binds/volumes/data"), false, 0, "data"),
				ex("/vol", testdata(t, "relative/vol"), true, 1, "vol"),
			},
		},
		{
			// Hints: /a and /b (the same pod volume, read-write) share one
			// attach point, /c (read-only) gets its own key; the tmpfs hint
			// removes /scratch; a share=container hint keeps its own attach
			// point; foreign annotations are ignored.
			name: "pod mount hints",
			dir:  "hints",
			root: "hints/rootfs",
			exports: []exp{
				ex("/", testdata(t, "hints/rootfs"), false, RootMount, "hints"),
				{Export: Export{Tag: "/a", Source: testdata(t, "hints/volumes/shared"), Mount: 0, Hint: "shared", Share: SharePod, ShareKey: "hint/shared/rw"}, marker: "shared"},
				{Export: Export{Tag: "/b", Source: testdata(t, "hints/volumes/shared"), Mount: 1, Hint: "shared", Share: SharePod, ShareKey: "hint/shared/rw"}, marker: "shared"},
				{Export: Export{Tag: "/c", Source: testdata(t, "hints/volumes/shared"), ReadOnly: true, Mount: 2, Hint: "shared", Share: SharePod, ShareKey: "hint/shared/ro"}, marker: "shared"},
				{Export: Export{Tag: "/private", Source: testdata(t, "hints/volumes/private"), Mount: 4, Hint: "private", Share: ShareContainer}, marker: "private"},
			},
			unserved: map[int]string{3: ReasonTmpfs},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A relative bundle path is made absolute.
			b, err := LoadBundle(filepath.Join("testdata", tc.dir))
			if err != nil {
				t.Fatalf("LoadBundle: %v", err)
			}
			if b.Dir != testdata(t, tc.dir) || b.ConfigPath != filepath.Join(b.Dir, ConfigName) {
				t.Errorf("Dir %q ConfigPath %q", b.Dir, b.ConfigPath)
			}
			if b.Root != testdata(t, tc.root) || b.ReadOnly != tc.rootRO {
				t.Errorf("Root %q ReadOnly %v, want %q %v", b.Root, b.ReadOnly, testdata(t, tc.root), tc.rootRO)
			}
			got := b.Exports()
			if len(got) != len(tc.exports) {
				t.Fatalf("got %d exports %+v, want %d", len(got), got, len(tc.exports))
			}
			for i, want := range tc.exports {
				if !reflect.DeepEqual(got[i], want.Export) {
					t.Errorf("export %d = %+v, want %+v", i, got[i], want.Export)
				}
				if m := readMarker(t, got[i].Source); m != want.marker {
					t.Errorf("export %d (%s) serves %q, want %q", i, got[i].Tag, m, want.marker)
				}
			}
			// Exports returns a copy: changing it does not change the bundle.
			got[0].Tag = "/changed"
			if b.Exports()[0].Tag != RootTag {
				t.Error("Exports shares its slice with the bundle")
			}
			un := b.Unserved()
			if len(un) != len(tc.unserved) {
				t.Fatalf("unserved %+v, want %v", un, tc.unserved)
			}
			for _, u := range un {
				if tc.unserved[u.Mount] != u.Reason {
					t.Errorf("mounts[%d] (%s) unserved because %q, want %q", u.Mount, u.Destination, u.Reason, tc.unserved[u.Mount])
				}
				if u.Destination != b.Spec.Mounts[u.Mount].Destination {
					t.Errorf("unserved destination %q, spec says %q", u.Destination, b.Spec.Mounts[u.Mount].Destination)
				}
			}
		})
	}
}

// bundle writes a bundle into a fresh directory: config.json from cfg (with
// "@DIR@" replaced by the bundle directory, for absolute paths), a rootfs
// directory, and the directories and files listed (a trailing '/' makes a
// directory).
func bundle(t *testing.T, cfg string, paths ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range append([]string{"rootfs/"}, paths...) {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if cfg != "" {
		cfg = strings.ReplaceAll(cfg, "@DIR@", dir)
		if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadBundleAbsolutePaths(t *testing.T) {
	// Absolute root and source are taken as they are, cleaned; the same
	// destination on a bind and a non-bind mount is no conflict (only served
	// mounts are compared).
	dir := bundle(t, `{"root":{"path":"@DIR@//rootfs/"},"mounts":[
		{"destination":"/v","type":"tmpfs","source":"tmpfs"},
		{"destination":"/v","type":"bind","source":"@DIR@/./vol","options":["rbind"]}]}`, "vol/")
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Export{
		{Tag: "/", Source: filepath.Join(dir, "rootfs"), Mount: RootMount, Share: ShareContainer},
		{Tag: "/v", Source: filepath.Join(dir, "vol"), Mount: 1, Share: ShareContainer},
	}
	if got := b.Exports(); !reflect.DeepEqual(got, want) {
		t.Errorf("exports %+v, want %+v", got, want)
	}
}

func TestLoadBundleErrors(t *testing.T) {
	const root = `"root":{"path":"rootfs"}`
	for _, tc := range []struct {
		name  string
		cfg   string   // config.json ("" = none)
		paths []string // extra paths for bundle()
		want  error    // sentinel, or nil when check is set
		check func(error) bool
		field string // must appear in the message (with the config path)
	}{
		{
			// No config.json: the host error, naming the file.
			name:  "no config.json",
			check: func(err error) bool { return errors.Is(err, fs.ErrNotExist) },
		},
		{
			// Not JSON: the decoder's error, naming the file.
			name:  "malformed json",
			cfg:   `{"root": {"path": "rootfs"`,
			check: func(err error) bool { var se *json.SyntaxError; return errors.As(err, &se) },
		},
		{
			// A field of the wrong JSON type.
			name:  "wrong type",
			cfg:   `{"root": {"path": 7}}`,
			check: func(err error) bool { var te *json.UnmarshalTypeError; return errors.As(err, &te) },
		},
		{
			// No root object.
			name: "no root", cfg: `{"ociVersion":"1.0.2"}`,
			want: ErrNoRoot, field: "root.path",
		},
		{
			// An empty root path.
			name: "empty root path", cfg: `{"root":{"path":""}}`,
			want: ErrNoRoot, field: "root.path",
		},
		{
			// A root path that does not exist.
			name: "root missing", cfg: `{"root":{"path":"nope"}}`,
			want: ErrNotExist, field: "root.path",
		},
		{
			// A root path naming a file.
			name: "root is a file", cfg: `{"root":{"path":"file"}}`, paths: []string{"file"},
			want: ErrRootNotDir, field: "root.path",
		},
		{
			// A bind mount without a source.
			name: "bind without source",
			cfg:  `{` + root + `,"mounts":[{"destination":"/d","type":"bind"}]}`,
			want: ErrNoSource, field: "mounts[0].source",
		},
		{
			// A bind mount whose source does not exist.
			name: "bind source missing",
			cfg:  `{` + root + `,"mounts":[{"destination":"/p","type":"proc","source":"proc"},{"destination":"/d","source":"nope","options":["rbind"]}]}`,
			want: ErrNotExist, field: "mounts[1].source",
		},
		{
			// A bind mount over the root.
			name: "destination is root",
			cfg:  `{` + root + `,"mounts":[{"destination":"/","type":"bind","source":"v"}]}`, paths: []string{"v/"},
			want: ErrBadDestination, field: "mounts[0].destination",
		},
		{
			// "/.." cleans to the root too.
			name: "destination cleans to root",
			cfg:  `{` + root + `,"mounts":[{"destination":"/..","type":"bind","source":"v"}]}`, paths: []string{"v/"},
			want: ErrBadDestination, field: "mounts[0].destination",
		},
		{
			// An empty destination.
			name: "empty destination",
			cfg:  `{` + root + `,"mounts":[{"destination":"","type":"bind","source":"v"}]}`, paths: []string{"v/"},
			want: ErrBadDestination, field: "mounts[0].destination",
		},
		{
			// Two binds on one destination (after cleaning): the aname would
			// be ambiguous; the message names both mounts.
			name: "duplicate destination",
			cfg: `{` + root + `,"mounts":[{"destination":"/d","type":"bind","source":"v"},
				{"destination":"/x","type":"tmpfs","source":"tmpfs"},
				{"destination":"/d/","type":"bind","source":"w"}]}`,
			paths: []string{"v/", "w/"},
			want:  ErrDuplicateDestination, field: "mounts[0] and mounts[2]",
		},
		{
			// An invalid hint fails the bundle, naming annotations and the hint.
			name: "invalid hint",
			cfg:  `{` + root + `,"annotations":{"dev.gvisor.spec.mount.vol.share":"everyone","dev.gvisor.spec.mount.vol.source":"/v","dev.gvisor.spec.mount.vol.type":"bind"}}`,
			want: ErrInvalidShare, field: `annotations: mount hint "vol"`,
		},
		{
			// A read-write mount of a volume whose hint says ro (gVisor's
			// compatibility rule: the mount may not be less restrictive).
			name: "rw mount of ro hint",
			cfg: `{` + root + `,"annotations":{"dev.gvisor.spec.mount.vol.share":"pod","dev.gvisor.spec.mount.vol.source":"@DIR@/v",
				"dev.gvisor.spec.mount.vol.type":"bind","dev.gvisor.spec.mount.vol.options":"ro"},
				"mounts":[{"destination":"/d","type":"bind","source":"v","options":["rw"]}]}`,
			paths: []string{"v/"},
			want:  ErrHintConflict, field: "mounts[0].options",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := bundle(t, tc.cfg, tc.paths...)
			b, err := LoadBundle(dir)
			if err == nil {
				t.Fatalf("LoadBundle succeeded: %+v", b.Exports())
			}
			if b != nil {
				t.Error("LoadBundle returned a bundle with an error")
			}
			switch {
			case tc.check != nil:
				if !tc.check(err) {
					t.Errorf("unexpected error %T: %v", err, err)
				}
			case !errors.Is(err, tc.want):
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				var se *SpecError
				if !errors.As(err, &se) {
					t.Errorf("error %T is not a *SpecError", err)
				}
			}
			msg := err.Error()
			if cfg := filepath.Join(dir, ConfigName); !strings.Contains(msg, cfg) {
				t.Errorf("message %q does not name %s", msg, cfg)
			}
			if !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %q", msg, tc.field)
			}
		})
	}
}

func TestLoadBundleEmptyDir(t *testing.T) {
	if _, err := LoadBundle(""); err == nil {
		t.Fatal("LoadBundle(\"\") succeeded")
	}
}

func TestIsBind(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		opts []string
		want bool
	}{
		{"bind", nil, true},                          // type bind alone
		{"none", []string{"rbind", "ro"}, true},      // rbind option, dummy type
		{"", []string{"bind"}, true},                 // bind option, no type
		{"tmpfs", []string{"nosuid"}, false},         // a real filesystem
		{"proc", nil, false},                         // a real filesystem
		{"none", []string{"rbindx", "bind="}, false}, // only exact words count
	} {
		m := specs.Mount{Destination: "/d", Type: tc.typ, Source: "/s", Options: tc.opts}
		if got := IsBind(m); got != tc.want {
			t.Errorf("IsBind(type %q, options %q) = %v, want %v", tc.typ, tc.opts, got, tc.want)
		}
	}
}

func TestLoadBundleConfigTooLarge(t *testing.T) {
	// A config.json past MaxConfigSize is refused before it is decoded.
	dir := bundle(t, "")
	f, err := os.Create(filepath.Join(dir, ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"root":{"path":"rootfs"}}`); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxConfigSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadBundle(dir); !errors.Is(err, ErrConfigTooLarge) {
		t.Fatalf("LoadBundle: %v, want ErrConfigTooLarge", err)
	}
	// At the limit it is read (NUL padding is not JSON, so it fails to
	// parse, but not for its size).
	if err := os.Truncate(filepath.Join(dir, ConfigName), MaxConfigSize); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBundle(dir); err == nil || errors.Is(err, ErrConfigTooLarge) {
		t.Fatalf("LoadBundle at the limit: %v", err)
	}
}
