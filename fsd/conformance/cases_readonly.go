package conformance

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("readonly", testReadOnly)
}

// treeState describes a host tree: every path with its stat, content and
// xattrs.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s ino=%d mode=%o nlink=%d uid=%d gid=%d size=%d mtime=%v ctime=%v xattrs=%q",
			path, st.Ino, st.Mode, st.Nlink, st.Uid, st.Gid, st.Size, st.Mtim, st.Ctim, hostXattrs(path))
		if d.Type().IsRegular() {
			c, err := readNoAtime(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " content=%q", c)
		}
		b.WriteByte('\n')
		return nil
	})
	mustHost(t, err)
	return b.String()
}

func testReadOnly(t *testing.T, e *env) {
	// Reading works.
	e.run(t, "read", func(t *testing.T) {
		f := walk(t, e.attach(t, ROTag), "ro.txt")
		_, _, err := f.Open(p9.ReadOnly)
		ok(t, err, "open")
		if got, err := readAll(f); err != nil || string(got) != "read only\n" {
			t.Errorf("read %q, %v", got, err)
		}
		d := openDir(t, e.attach(t, ROTag))
		checkOnce(t, readdirEntries(t, d, 0, 4096), hostNames(t, e.ro))
	})
	before := treeState(t, e.ro)
	// Every mutation answers EROFS.
	for _, row := range []struct {
		name string
		op   func(t *testing.T, root p9.File) error
	}{
		// Each row is one mutation; all must answer EROFS and change nothing.
		{"create", func(t *testing.T, root p9.File) error {
			_, _, err := create(root, "new", p9.ReadWrite, 0o644)
			return err
		}},
		// O_TRUNC on an existing name through create.
		{"create-existing-name", func(t *testing.T, root p9.File) error {
			_, _, err := create(root, "ro.txt", p9.ReadWrite|dotlTrunc, 0o644)
			return err
		}},
		{"mkdir", func(t *testing.T, root p9.File) error {
			_, err := root.Mkdir("newdir", 0o755, p9.NoUID, p9.NoGID)
			return err
		}},
		{"symlink", func(t *testing.T, root p9.File) error {
			_, err := root.Symlink("ro.txt", "newlink", p9.NoUID, p9.NoGID)
			return err
		}},
		{"link", func(t *testing.T, root p9.File) error {
			return root.Link(walk(t, root, "ro.txt"), "hard")
		}},
		{"mknod", func(t *testing.T, root p9.File) error {
			_, err := root.Mknod("node", p9.ModeRegular|0o644, 0, 0, p9.NoUID, p9.NoGID)
			return err
		}},
		// FIFOs are created, never opened: still a mutation.
		{"mknod-fifo", func(t *testing.T, root p9.File) error {
			_, err := root.Mknod("fifo", p9.ModeNamedPipe|0o644, 0, 0, p9.NoUID, p9.NoGID)
			return err
		}},
		{"renameat", func(t *testing.T, root p9.File) error {
			return root.RenameAt("ro.txt", root, "moved.txt")
		}},
		{"unlinkat", func(t *testing.T, root p9.File) error {
			return root.UnlinkAt("ro.txt", 0)
		}},
		// Unlink from a walked subdirectory, not only the root.
		{"unlinkat-dir", func(t *testing.T, root p9.File) error {
			return walk(t, root, "rodir").UnlinkAt("x", 0)
		}},
		{"rmdir", func(t *testing.T, root p9.File) error {
			return root.UnlinkAt("rodir", atRemoveDir)
		}},
		// Tremove (the server clunks the fid after).
		{"remove", func(t *testing.T, root p9.File) error {
			return walk(t, root, "ro.txt").(remover).Remove()
		}},
		{"setattr-mode", func(t *testing.T, root p9.File) error {
			return walk(t, root, "ro.txt").SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777})
		}},
		{"setattr-size", func(t *testing.T, root p9.File) error {
			return walk(t, root, "ro.txt").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0})
		}},
		{"setattr-owner", func(t *testing.T, root p9.File) error {
			return walk(t, root, "ro.txt").SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 0, GID: 0})
		}},
		// "now" times are a mutation too.
		{"setattr-times", func(t *testing.T, root p9.File) error {
			return walk(t, root, "ro.txt").SetAttr(p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{})
		}},
		{"setattr-dir-times", func(t *testing.T, root p9.File) error {
			return walk(t, root, "rodir").SetAttr(p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: 1})
		}},
		{"open-write", func(t *testing.T, root p9.File) error {
			_, _, err := walk(t, root, "ro.txt").Open(p9.WriteOnly)
			return err
		}},
		{"open-read-write", func(t *testing.T, root p9.File) error {
			_, _, err := walk(t, root, "ro.txt").Open(p9.ReadWrite)
			return err
		}},
		// A read-only open with O_TRUNC truncates: refused.
		{"open-truncate", func(t *testing.T, root p9.File) error {
			_, _, err := walk(t, root, "ro.txt").Open(p9.ReadOnly | dotlTrunc)
			return err
		}},
	} {
		e.run(t, row.name+"-erofs", func(t *testing.T) {
			wantErrno(t, row.op(t, e.attach(t, ROTag)), linux.EROFS, "%s", row.name)
		})
	}
	// Xattr mutations answer EROFS too.
	e.run(t, "setxattr-erofs", func(t *testing.T) {
		r := e.raw(t, ROTag, noFID)
		_, err := r.walk(0, 1, "ro.txt")
		ok(t, err, "walk")
		wantErrno(t, r.setXattr(1, 2, "user.x", []byte("v"), 0), linux.EROFS, "setxattr")
	})
	e.run(t, "removexattr-erofs", func(t *testing.T) {
		r := e.raw(t, ROTag, noFID)
		_, err := r.walk(0, 1, "ro.txt")
		ok(t, err, "walk")
		wantErrno(t, r.removeXattr(1, 2, "user.x"), linux.EROFS, "removexattr")
	})
	// And nothing changed on the host.
	if after := treeState(t, e.ro); after != before {
		t.Errorf("read-only export changed:\n%s\n->\n%s", before, after)
	}
}
