package hostfs

import (
	"bytes"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func needUserXattrs(t *testing.T, path string) {
	t.Helper()
	if err := unix.Lsetxattr(path, "user.probe", []byte("p"), 0); err != nil {
		t.Skipf("no user xattrs on the test file system: %v", err)
	}
	must(t, unix.Lremovexattr(path, "user.probe"))
}

func TestXattrs(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		needUserXattrs(t, tr.path("file.txt"))
		_, root := attach(t, tr.root, opts...)
		// Each File kind reaches the inode its own way: a walked (O_PATH)
		// file, an open file, an open directory.
		for _, row := range []struct {
			name, path string
			open       bool
		}{
			{"file", "file.txt", false},     // O_PATH: *xattrat or a reopened fd
			{"open-file", "file.txt", true}, // the open fd directly
			{"dir", "dir", false},           // directories carry user.* too
			{"open-dir", "dir", true},       // through the open directory fd
		} {
			t.Run(row.name, func(t *testing.T) {
				f := walkTo(t, root, row.path)
				if row.open {
					_, _, err := f.Open(p9.ReadOnly)
					must(t, err)
				}
				attr := "user." + row.name
				must(t, f.SetXattr(attr, []byte("v1"), 0))
				wantErr(t, f.SetXattr(attr, []byte("v2"), p9.XattrCreate), linux.EEXIST, "XATTR_CREATE existing")
				must(t, f.SetXattr(attr, []byte("v3"), p9.XattrReplace))
				wantErr(t, f.SetXattr("user.absent", []byte("v"), p9.XattrReplace), linux.ENODATA, "XATTR_REPLACE missing")
				got, err := f.GetXattr(attr)
				must(t, err)
				if string(got) != "v3" {
					t.Errorf("get %q", got)
				}
				host := make([]byte, 16)
				n, err := unix.Lgetxattr(tr.path(row.path), attr, host)
				if err != nil || string(host[:n]) != "v3" {
					t.Errorf("host %q, %v", host[:n], err)
				}
				names, err := f.ListXattrs()
				must(t, err)
				if !contains(names, attr) {
					t.Errorf("list %v lacks %s", names, attr)
				}
				must(t, f.RemoveXattr(attr))
				_, err = f.GetXattr(attr)
				wantErr(t, err, linux.ENODATA, "get removed")
				wantErr(t, f.RemoveXattr(attr), linux.ENODATA, "remove removed")
			})
		}
		// Values larger than the first buffer, and the empty value.
		t.Run("sizes", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			val := bytes.Repeat([]byte("z"), 3000)
			must(t, f.SetXattr("user.big", val, 0))
			got, err := f.GetXattr("user.big")
			if err != nil || !bytes.Equal(got, val) {
				t.Errorf("get %d bytes, %v", len(got), err)
			}
			must(t, f.SetXattr("user.empty", nil, 0))
			got, err = f.GetXattr("user.empty")
			if err != nil || len(got) != 0 {
				t.Errorf("get empty: %q, %v", got, err)
			}
		})
		// The list holds only user.* names, even when the host has others.
		t.Run("list-filters-namespaces", func(t *testing.T) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to set a trusted.* xattr")
			}
			must(t, os.WriteFile(tr.path("ns"), nil, 0o644))
			if err := unix.Lsetxattr(tr.path("ns"), "trusted.hidden", []byte("h"), 0); err != nil {
				t.Skipf("no trusted xattrs: %v", err)
			}
			must(t, unix.Lsetxattr(tr.path("ns"), "user.shown", []byte("s"), 0))
			names, err := walkTo(t, root, "ns").ListXattrs()
			must(t, err)
			sort.Strings(names)
			if strings.Join(names, ",") != "user.shown" {
				t.Errorf("list %v", names)
			}
			_, err = walkTo(t, root, "ns").GetXattr("trusted.hidden")
			wantErr(t, err, linux.EOPNOTSUPP, "get trusted.*")
		})
		// Refusals, checked before any system call.
		t.Run("refused", func(t *testing.T) {
			must(t, unix.Mkfifo(tr.path("fifo"), 0o644))
			f := walkTo(t, root, "file.txt")
			for _, row := range []struct {
				name string
				err  error
				want linux.Errno
			}{
				{"symlink", walkTo(t, root, "link-file").SetXattr("user.x", nil, 0), linux.EOPNOTSUPP},     // never through a link
				{"symlink-get", second(walkTo(t, root, "link-file").GetXattr("user.x")), linux.EOPNOTSUPP}, // not even reads
				{"symlink-list", second(walkTo(t, root, "link-file").ListXattrs()), linux.EOPNOTSUPP},      // nor lists
				{"fifo", walkTo(t, root, "fifo").SetXattr("user.x", nil, 0), linux.EOPNOTSUPP},             // special files carry none
				{"trusted", f.SetXattr("trusted.x", nil, 0), linux.EOPNOTSUPP},                             // host kernel namespace
				{"security", f.SetXattr("security.capability", []byte{1}, 0), linux.EOPNOTSUPP},            // file capabilities
				{"acl", f.RemoveXattr("system.posix_acl_access"), linux.EOPNOTSUPP},                        // ACLs
				{"empty-name", f.SetXattr("", nil, 0), linux.ERANGE},                                       // as setxattr(2)
				{"long-name", f.SetXattr("user."+strings.Repeat("n", 251), nil, 0), linux.ERANGE},          // 256 > XATTR_NAME_MAX
				{"nul-name", f.SetXattr("user.a\x00b", nil, 0), linux.EINVAL},                              // would truncate the name
				{"too-big", f.SetXattr("user.x", make([]byte, xattrSizeMax+1), 0), linux.E2BIG},            // > XATTR_SIZE_MAX
				{"bad-flags", f.SetXattr("user.x", nil, 4), linux.EINVAL},                                  // only XATTR_CREATE|XATTR_REPLACE
			} {
				wantErr(t, row.err, row.want, row.name)
			}
		})
	})
}

func second[T any](_ T, err error) error { return err }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
