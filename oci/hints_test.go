package oci

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// hint builds the annotations of one hint under the current prefix.
func hint(name string, fields ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(fields); i += 2 {
		m[MountPrefix+name+"."+fields[i]] = fields[i+1]
	}
	return m
}

// merge joins annotation maps.
func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestParseHintsValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want map[string]Hint
	}{
		{
			// No annotations at all: no hints, no error.
			name: "none",
			ann:  nil,
			want: map[string]Hint{},
		},
		{
			// Annotations of other tools, and gVisor's rootfs hints, are not
			// mount hints and are left alone.
			name: "foreign annotations ignored",
			ann: map[string]string{
				"io.kubernetes.cri.container-type": "container",
				"dev.gvisor.spec.rootfs.source":    "/img",
				"dev.gvisor.spec.mountx.a.source":  "/x",
			},
			want: map[string]Hint{},
		},
		{
			// The current form with every field; options are split on ','.
			name: "current prefix, all fields",
			ann:  hint("vol1", "source", "/pods/p/vol1", "type", "bind", "share", "pod", "options", "rw,noexec"),
			want: map[string]Hint{"vol1": {Name: "vol1", Source: "/pods/p/vol1", Type: TypeBind, Share: SharePod, Options: []string{"rw", "noexec"}}},
		},
		{
			// The older form ("gvisor.dev/spec/mount/<name>/<field>") is read
			// the same way.
			name: "legacy prefix",
			ann: map[string]string{
				LegacyMountPrefix + "vol2/source": "/pods/p/vol2",
				LegacyMountPrefix + "vol2/type":   "tmpfs",
				LegacyMountPrefix + "vol2/share":  "container",
			},
			want: map[string]Hint{"vol2": {Name: "vol2", Source: "/pods/p/vol2", Type: TypeTmpfs, Share: ShareContainer}},
		},
		{
			// One hint may mix both forms; a field given twice with the same
			// value is fine.
			name: "mixed prefixes, agreeing duplicate",
			ann: map[string]string{
				MountPrefix + "v.source":        "/s",
				LegacyMountPrefix + "v/source":  "/s",
				LegacyMountPrefix + "v/type":    "bind",
				MountPrefix + "v.share":         "shared",
				LegacyMountPrefix + "v/options": "ro",
			},
			want: map[string]Hint{"v": {Name: "v", Source: "/s", Type: TypeBind, Share: ShareShared, Options: []string{"ro"}}},
		},
		{
			// Several hints with distinct sources; empty option entries are
			// dropped.
			name: "two hints",
			ann: merge(
				hint("a", "source", "/a", "type", "bind", "share", "pod", "options", ",ro,,"),
				hint("b", "source", "/b", "type", "tmpfs", "share", "container"),
			),
			want: map[string]Hint{
				"a": {Name: "a", Source: "/a", Type: TypeBind, Share: SharePod, Options: []string{"ro"}},
				"b": {Name: "b", Source: "/b", Type: TypeTmpfs, Share: ShareContainer},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHints(tc.ann)
			if err != nil {
				t.Fatalf("ParseHints: %v", err)
			}
			if h.Len() != len(tc.want) {
				t.Fatalf("got %d hints %v, want %d", h.Len(), h.Names(), len(tc.want))
			}
			for name, want := range tc.want {
				got, ok := h.Get(name)
				if !ok {
					t.Fatalf("hint %q missing (have %v)", name, h.Names())
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("hint %q = %+v, want %+v", name, got, want)
				}
			}
		})
	}
}

func TestParseHintsInvalid(t *testing.T) {
	valid := hint("ok", "source", "/ok", "type", "bind", "share", "pod")
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want error
		// hint and key must appear in the message (key may be empty).
		hint, key string
	}{
		{
			// A current-form key without a field part.
			name: "key without field",
			ann:  merge(valid, map[string]string{MountPrefix + "vol": "x"}),
			want: ErrMalformedKey, hint: "vol", key: MountPrefix + "vol",
		},
		{
			// A name may not contain the separator: three parts.
			name: "key with three parts",
			ann:  merge(valid, map[string]string{MountPrefix + "a.b.source": "/x"}),
			want: ErrMalformedKey, hint: "a", key: MountPrefix + "a.b.source",
		},
		{
			// An empty name.
			name: "key without name",
			ann:  map[string]string{MountPrefix + ".source": "/x"},
			want: ErrMalformedKey, key: MountPrefix + ".source",
		},
		{
			// An empty field.
			name: "key with empty field",
			ann:  map[string]string{MountPrefix + "vol.": "/x"},
			want: ErrMalformedKey, hint: "vol", key: MountPrefix + "vol.",
		},
		{
			// The legacy form is checked the same way.
			name: "legacy key without field",
			ann:  map[string]string{LegacyMountPrefix + "vol": "x"},
			want: ErrMalformedKey, hint: "vol", key: LegacyMountPrefix + "vol",
		},
		{
			// A field gVisor does not know.
			name: "unknown field",
			ann:  merge(valid, hint("vol", "source", "/v", "type", "bind", "share", "pod", "size", "1g")),
			want: ErrUnknownField, hint: "vol", key: MountPrefix + "vol.size",
		},
		{
			// share must be container, pod or shared.
			name: "invalid share",
			ann:  hint("vol", "source", "/v", "type", "bind", "share", "cluster"),
			want: ErrInvalidShare, hint: "vol", key: MountPrefix + "vol.share",
		},
		{
			// type must be bind or tmpfs.
			name: "invalid type",
			ann:  hint("vol", "source", "/v", "type", "overlay", "share", "pod"),
			want: ErrInvalidType, hint: "vol", key: MountPrefix + "vol.type",
		},
		{
			// An empty source cannot match any mount.
			name: "empty source",
			ann:  hint("vol", "source", "", "type", "bind", "share", "pod"),
			want: ErrEmptySource, hint: "vol", key: MountPrefix + "vol.source",
		},
		{
			// Each required field missing is named.
			name: "missing share",
			ann:  hint("vol", "source", "/v", "type", "bind"),
			want: ErrMissingField, hint: "vol", key: "share",
		},
		{
			// A hint with only options misses all three.
			name: "missing source type share",
			ann:  hint("vol", "options", "ro"),
			want: ErrMissingField, hint: "vol", key: "source, type, share",
		},
		{
			// Two hints naming one volume (after cleaning) are ambiguous; the
			// message names both.
			name: "duplicate source",
			ann: merge(
				hint("first", "source", "/pods/v", "type", "bind", "share", "pod"),
				hint("second", "source", "/pods/v/", "type", "tmpfs", "share", "container"),
			),
			want: ErrDuplicateSource, hint: "second", key: "first",
		},
		{
			// The two forms disagreeing on a field is an error, not a race
			// decided by map order.
			name: "conflicting forms",
			ann: map[string]string{
				MountPrefix + "v.source":       "/a",
				LegacyMountPrefix + "v/source": "/b",
				MountPrefix + "v.type":         "bind",
				MountPrefix + "v.share":        "pod",
			},
			want: ErrConflictingKeys, hint: "v", key: "/a",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHints(tc.ann)
			if err == nil {
				t.Fatalf("ParseHints succeeded with %v hints, want %v", h.Names(), tc.want)
			}
			if h != nil {
				t.Errorf("ParseHints returned hints %v with an error", h.Names())
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			var he *HintError
			if !errors.As(err, &he) {
				t.Fatalf("error %T is not a *HintError", err)
			}
			if he.Hint != tc.hint {
				t.Errorf("HintError.Hint = %q, want %q", he.Hint, tc.hint)
			}
			msg := err.Error()
			if tc.hint != "" && !strings.Contains(msg, `"`+tc.hint+`"`) {
				t.Errorf("message %q does not name hint %q", msg, tc.hint)
			}
			if tc.key != "" && !strings.Contains(msg, tc.key) {
				t.Errorf("message %q does not contain %q", msg, tc.key)
			}
		})
	}
}

func TestHintReadOnlyLastWins(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want bool
	}{
		{nil, false},                           // no options: read-write
		{[]string{"ro"}, true},                 // ro alone
		{[]string{"ro", "noexec"}, true},       // other options do not matter
		{[]string{"ro", "rw"}, false},          // rw after ro wins
		{[]string{"rw", "ro"}, true},           // ro after rw wins
		{[]string{"rbind", "rro"}, false},      // only the exact word counts
		{[]string{"nosuid", "ro,rw"}, false},   // an unsplit entry is not "ro"
		{[]string{"bind", "ro", "bind"}, true}, // bind does not reset it
	} {
		h := Hint{Options: tc.opts}
		if got := h.ReadOnly(); got != tc.want {
			t.Errorf("ReadOnly(%q) = %v, want %v", tc.opts, got, tc.want)
		}
	}
}

func TestShareString(t *testing.T) {
	for s, want := range map[Share]string{ShareContainer: "container", SharePod: "pod", ShareShared: "shared", 0: "Share(0)"} {
		if got := s.String(); got != want {
			t.Errorf("Share(%d).String() = %q, want %q", int(s), got, want)
		}
		if s == 0 {
			continue
		}
		// String and parseShare are inverses.
		if back, ok := parseShare(want); !ok || back != s {
			t.Errorf("parseShare(%q) = %v, %v", want, back, ok)
		}
	}
}

// FuzzParseHints checks that no annotation set makes ParseHints panic, and
// that every error is a *HintError wrapping one of the sentinels.
func FuzzParseHints(f *testing.F) {
	f.Add(MountPrefix+"a.source", "/a", MountPrefix+"a.share", "pod")
	f.Add(LegacyMountPrefix+"a/type", "bind", MountPrefix+"a..", "x")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		h, err := ParseHints(map[string]string{k1: v1, k2: v2})
		if err == nil {
			for _, n := range h.Names() {
				if g, _ := h.Get(n); g.Source == "" || g.Share == 0 {
					t.Fatalf("accepted incomplete hint %+v", g)
				}
			}
			return
		}
		var he *HintError
		if !errors.As(err, &he) {
			t.Fatalf("error %T %v is not a *HintError", err, err)
		}
	})
}
