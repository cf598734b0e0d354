package oci

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fsd-launcher/fsd-launcher/config"
)

func TestBundleConfig(t *testing.T) {
	b, err := LoadBundle(filepath.Join("testdata", "binds"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "fsd.sock")
	base := config.Default(t.TempDir(), sock)
	base.ReadOnly = true
	base.Mounts = []config.Mount{{Tag: "old", Source: t.TempDir()}}
	base.Limits.MaxFids = 99
	base.Sandbox = config.SandboxChroot
	base.Daemon.Args = []string{"--extra"}
	keep := *base
	keep.Mounts = append([]config.Mount(nil), base.Mounts...)

	c, err := b.Config(base)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle decides shared_dir, readonly and the mounts (one per
	// served bind, in spec order, tag = destination).
	want := []config.Mount{
		{Tag: "/data", Source: testdata(t, "binds/volumes/data")},
		{Tag: "/etc/config", Source: testdata(t, "binds/volumes/config"), ReadOnly: true},
		{Tag: "/data/sub", Source: testdata(t, "binds/volumes/sub")},
		{Tag: "/cache", Source: testdata(t, "binds/volumes/cache")},
		{Tag: "/logs", Source: testdata(t, "binds/volumes/logs"), ReadOnly: true},
	}
	if c.SharedDir != b.Root || c.ReadOnly || !reflect.DeepEqual(c.Mounts, want) {
		t.Errorf("shared_dir %q readonly %v mounts %+v", c.SharedDir, c.ReadOnly, c.Mounts)
	}
	// Every other key is base's.
	if c.SocketPath != sock || c.Limits.MaxFids != 99 || c.Sandbox != config.SandboxChroot ||
		!reflect.DeepEqual(c.Daemon.Args, []string{"--extra"}) || c.ReadyTimeout != base.ReadyTimeout {
		t.Errorf("base keys lost: %+v", c)
	}
	// base is not modified, and the result shares no slice with it.
	if !reflect.DeepEqual(*base, keep) {
		t.Errorf("base modified: %+v", base)
	}
	c.Daemon.Args[0] = "changed"
	if base.Daemon.Args[0] != "--extra" {
		t.Error("Config shares daemon.args with its base")
	}

	// A read-only root.
	ro, err := LoadBundle(filepath.Join("testdata", "readonly-root"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ro.Config(config.Default("", sock)); err != nil || !c.ReadOnly || len(c.Mounts) != 0 {
		t.Errorf("read-only root: %+v, %v", c, err)
	}
}

func TestBundleConfigErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fsd.sock")
	for _, tc := range []struct {
		name  string
		cfg   string
		paths []string
		base  func() *config.Config
		want  error
		text  string // must appear in the message
	}{
		{
			// No base configuration.
			name: "nil base", cfg: `{"root":{"path":"rootfs"}}`,
			base: func() *config.Config { return nil },
			want: ErrNoBase,
		},
		{
			// A destination with a space cannot be a --mount tag; the error
			// names the mount.
			name:  "space in destination",
			cfg:   `{"root":{"path":"rootfs"},"mounts":[{"destination":"/my data","type":"bind","source":"v"}]}`,
			paths: []string{"v/"},
			want:  ErrUnsupportedTag, text: "mounts[0].destination",
		},
		{
			// '=' is the --mount flag's separator.
			name:  "equals in destination",
			cfg:   `{"root":{"path":"rootfs"},"mounts":[{"destination":"/p","type":"tmpfs"},{"destination":"/a=b","type":"bind","source":"v"}]}`,
			paths: []string{"v/"},
			want:  ErrUnsupportedTag, text: "mounts[1].destination",
		},
		{
			// A control character.
			name:  "tab in destination",
			cfg:   `{"root":{"path":"rootfs"},"mounts":[{"destination":"/a\u0007b","type":"bind","source":"v"}]}`,
			paths: []string{"v/"},
			want:  ErrUnsupportedTag, text: "mounts[0].destination",
		},
		{
			// ',' in a source cannot be passed in --mount.
			name:  "comma in source",
			cfg:   `{"root":{"path":"rootfs"},"mounts":[{"destination":"/d","type":"bind","source":"a,b"}]}`,
			paths: []string{"a,b/"},
			want:  ErrUnsupportedSource, text: "mounts[0].source",
		},
		{
			// The result is validated: mounts with an external daemon are
			// refused by config.Validate; the error names the bundle.
			name:  "external daemon",
			cfg:   `{"root":{"path":"rootfs"},"mounts":[{"destination":"/d","type":"bind","source":"v"}]}`,
			paths: []string{"v/"},
			base: func() *config.Config {
				c := config.Default("", sock)
				c.Daemon.Path = "/usr/lib/qemu/virtiofsd"
				c.Daemon.ReadyLine = "ready"
				return c
			},
			want: config.ErrInvalid, text: "bundle ",
		},
		{
			// A relative socket path in the base fails validation too.
			name: "invalid base",
			cfg:  `{"root":{"path":"rootfs"}}`,
			base: func() *config.Config { return config.Default("", "relative.sock") },
			want: config.ErrInvalid, text: "socket_path",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := LoadBundle(bundle(t, tc.cfg, tc.paths...))
			if err != nil {
				t.Fatal(err)
			}
			base := config.Default("", sock)
			if tc.base != nil {
				base = tc.base()
			}
			c, err := b.Config(base)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Config: %+v, %v; want %v", c, err, tc.want)
			}
			if c != nil {
				t.Error("Config returned a configuration with an error")
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("message %q does not contain %q", err, tc.text)
			}
		})
	}
}

// TestBundleConfigShareGroups proves that start --bundle keeps pod sharing:
// the mounts of a share=pod volume carry one share group per mode into the
// launcher's [[mount]] table, and a container-shared mount carries none.
func TestBundleConfigShareGroups(t *testing.T) {
	b, err := LoadBundle(filepath.Join("testdata", "hints"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Config(config.Default(t.TempDir(), filepath.Join(t.TempDir(), "fsd.sock")))
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]string{}
	for _, m := range c.Mounts {
		share[m.Tag] = m.Share
	}
	switch {
	case share["/a"] == "" || share["/a"] != share["/b"]:
		t.Errorf("the read-write mounts of the pod volume: groups %q and %q, want one non-empty group", share["/a"], share["/b"])
	case share["/c"] == "" || share["/c"] == share["/a"]:
		t.Errorf("the read-only mount of the pod volume: group %q, want its own (read-only belongs to the attach point)", share["/c"])
	case share["/private"] != "":
		t.Errorf("a container-shared mount: group %q, want none", share["/private"])
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the launcher refuses the bundle's config: %v", err)
	}
}
