package conformance

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// atRemoveDir is AT_REMOVEDIR as 9P2000.L carries it in Tunlinkat.
const atRemoveDir = 0x200

func init() {
	register("create", testCreate)
	register("mkdir", testMkdir)
	register("symlink", testSymlink)
	register("link", testLink)
	register("mknod", testMknod)
	register("rename", testRename)
	register("unlink", testUnlink)
	register("remove", testRemove)
	register("modes", testModes)
	register("modes-setid", testModesSetID)
	register("owner", testOwner)
}

// absent fails the test if path exists on the host.
func absent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v)", path, err)
	}
}

func testCreate(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Create makes a regular file with the exact mode and returns it open
	// with the QID a later walk sees.
	e.run(t, "basic", func(t *testing.T) {
		f, qid, err := create(root, "new.txt", p9.ReadWrite, 0o640)
		ok(t, err, "create")
		st := lstat(t, e.host("new.txt"))
		if st.Mode != unix.S_IFREG|0o640 || qid.Type != p9.TypeRegular {
			t.Errorf("host mode %o, qid %v", st.Mode, qid)
		}
		_, err = f.WriteAt([]byte("abc"), 0)
		ok(t, err, "write through the created fid")
		if got, _ := os.ReadFile(e.host("new.txt")); string(got) != "abc" {
			t.Errorf("host content %q", got)
		}
		qids, _, err := root.Walk([]string{"new.txt"})
		ok(t, err, "walk")
		if qids[0] != qid {
			t.Errorf("walk qid %v, create qid %v", qids[0], qid)
		}
	})
	// Creating an existing name answers EEXIST and leaves it alone.
	e.run(t, "exists-eexist", func(t *testing.T) {
		_, _, err := create(root, "file.txt", p9.ReadWrite|dotlTrunc, 0o600)
		wantErrno(t, err, linux.EEXIST, "create file.txt")
		if got, _ := os.ReadFile(e.host("file.txt")); string(got) != exportFileContent {
			t.Errorf("file.txt changed: %q", got)
		}
	})
	// Creating over a symlink never follows it.
	e.run(t, "over-symlink-eexist", func(t *testing.T) {
		_, _, err := create(root, "to-canary", p9.ReadWrite|dotlTrunc, 0o600)
		wantErrno(t, err, linux.EEXIST, "create to-canary")
	})
	// Create in a file fid answers ENOTDIR.
	e.run(t, "in-file-enotdir", func(t *testing.T) {
		_, _, err := create(walk(t, root, "file.txt"), "x", p9.ReadWrite, 0o600)
		wantErrno(t, err, linux.ENOTDIR, "create in file.txt")
	})
}

func testMkdir(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Mkdir makes a directory with the exact mode.
	e.run(t, "basic", func(t *testing.T) {
		qid, err := root.Mkdir("newdir", 0o750, p9.NoUID, p9.NoGID)
		ok(t, err, "mkdir")
		st := lstat(t, e.host("newdir"))
		if st.Mode != unix.S_IFDIR|0o750 || qid.Type != p9.TypeDir {
			t.Errorf("host mode %o, qid %v", st.Mode, qid)
		}
		walk(t, root, "newdir")
	})
	// An existing name answers EEXIST.
	e.run(t, "exists-eexist", func(t *testing.T) {
		_, err := root.Mkdir("dir", 0o755, p9.NoUID, p9.NoGID)
		wantErrno(t, err, linux.EEXIST, "mkdir dir")
	})
	// Nested: mkdir in a walked subdirectory.
	e.run(t, "nested", func(t *testing.T) {
		_, err := walk(t, root, "dir").Mkdir("inner", 0o700, p9.NoUID, p9.NoGID)
		ok(t, err, "mkdir dir/inner")
		if st := lstat(t, e.host("dir/inner")); st.Mode != unix.S_IFDIR|0o700 {
			t.Errorf("host mode %o", st.Mode)
		}
	})
}

func testSymlink(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Targets are stored verbatim and never followed.
	for _, row := range []struct{ name, target string }{
		{"absolute-outside", e.canary}, // stored, never followed to the canary
		{"root", "/"},                  // stored, never followed
		{"dotdot", "../canary.txt"},    // stored, never cleaned
		{"relative", "file.txt"},       // an ordinary link
		{"dangling", "does/not/exist"}, // no target needed
		{"odd-bytes", "x y\nz\xff"},    // bytes verbatim
	} {
		e.run(t, row.name, func(t *testing.T) {
			qid, err := root.Symlink(row.target, "s-"+row.name, p9.NoUID, p9.NoGID)
			ok(t, err, "symlink")
			got, err := os.Readlink(e.host("s-" + row.name))
			mustHost(t, err)
			if got != row.target || qid.Type != p9.TypeSymlink {
				t.Errorf("host target %q, qid %v", got, qid)
			}
			rl, err := walk(t, root, "s-"+row.name).Readlink()
			ok(t, err, "readlink")
			if rl != row.target {
				t.Errorf("readlink %q", rl)
			}
		})
	}
	// An existing name answers EEXIST.
	e.run(t, "exists-eexist", func(t *testing.T) {
		_, err := root.Symlink("x", "file.txt", p9.NoUID, p9.NoGID)
		wantErrno(t, err, linux.EEXIST, "symlink over file.txt")
	})
}

func testLink(t *testing.T, e *env) {
	root := e.rootFile(t)
	// A hard link to a file names the same inode.
	e.run(t, "file", func(t *testing.T) {
		ok(t, root.Link(walk(t, root, "file.txt"), "hard.txt"), "link")
		a, b := lstat(t, e.host("file.txt")), lstat(t, e.host("hard.txt"))
		if a.Ino != b.Ino || a.Nlink != 2 {
			t.Errorf("ino %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
		}
	})
	// A hard link to a symlink links the symlink itself, not its target.
	e.run(t, "symlink-itself", func(t *testing.T) {
		ok(t, walk(t, root, "dir").Link(walk(t, root, "to-canary"), "hl"), "link")
		a, b := lstat(t, e.host("to-canary")), lstat(t, e.host("dir/hl"))
		if b.Mode&unix.S_IFMT != unix.S_IFLNK || a.Ino != b.Ino {
			t.Errorf("dir/hl: mode %o ino %d, to-canary ino %d", b.Mode, b.Ino, a.Ino)
		}
	})
	// Directories cannot be hard linked: EPERM.
	e.run(t, "directory-eperm", func(t *testing.T) {
		wantErrno(t, root.Link(walk(t, root, "dir"), "dirlink"), linux.EPERM, "link dir")
		absent(t, e.host("dirlink"))
	})
	// An existing name answers EEXIST.
	e.run(t, "exists-eexist", func(t *testing.T) {
		wantErrno(t, root.Link(walk(t, root, "file.txt"), "dir"), linux.EEXIST, "link over dir")
	})
}

func testMknod(t *testing.T, e *env) {
	root := e.rootFile(t)
	for _, row := range []struct {
		name string
		mode p9.FileMode
		want linux.Errno // 0: created with exactly mode
	}{
		{"regular", p9.ModeRegular | 0o640, 0},                             // a regular file
		{"fifo", p9.ModeNamedPipe | 0o620, 0},                              // a FIFO (created, never opened)
		{"char-device-eperm", p9.ModeCharacterDevice | 0o666, linux.EPERM}, // never a device
		{"block-device-eperm", p9.ModeBlockDevice | 0o666, linux.EPERM},    // never a device
		{"socket-eperm", p9.ModeSocket | 0o777, linux.EPERM},               // never a socket
	} {
		e.run(t, row.name, func(t *testing.T) {
			qid, err := root.Mknod(row.name, row.mode, 1, 3, p9.NoUID, p9.NoGID)
			if row.want != 0 {
				wantErrno(t, err, row.want, "mknod %o", row.mode)
				absent(t, e.host(row.name))
				return
			}
			ok(t, err, "mknod")
			st := lstat(t, e.host(row.name))
			if st.Mode != uint32(row.mode) || st.Rdev != 0 {
				t.Errorf("host mode %o rdev %d, want %o", st.Mode, st.Rdev, row.mode)
			}
			if qid.Path == 0 && qid.Type == 0 {
				t.Errorf("empty qid")
			}
		})
	}
}

func testRename(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Rename within a directory.
	e.run(t, "same-dir", func(t *testing.T) {
		before := lstat(t, e.host("file.txt"))
		ok(t, root.RenameAt("file.txt", root, "renamed.txt"), "renameat")
		absent(t, e.host("file.txt"))
		if st := lstat(t, e.host("renamed.txt")); st.Ino != before.Ino {
			t.Errorf("renamed.txt is another inode")
		}
	})
	// Rename across directories.
	e.run(t, "across-dirs", func(t *testing.T) {
		ok(t, walk(t, root, "dir").RenameAt("sub.txt", root, "moved.txt"), "renameat")
		absent(t, e.host("dir/sub.txt"))
		lstat(t, e.host("moved.txt"))
	})
	// Rename over an existing file replaces it.
	e.run(t, "replace", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("a"), []byte("A"), 0o644))
		mustHost(t, os.WriteFile(e.host("b"), []byte("B"), 0o644))
		ok(t, root.RenameAt("a", root, "b"), "renameat")
		if got, _ := os.ReadFile(e.host("b")); string(got) != "A" {
			t.Errorf("b holds %q", got)
		}
	})
	// A missing source answers ENOENT.
	e.run(t, "enoent", func(t *testing.T) {
		wantErrno(t, root.RenameAt("missing", root, "x"), linux.ENOENT, "rename missing")
	})
	// A walked fid keeps naming its inode across a rename.
	e.run(t, "fid-follows-inode", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("c"), []byte("C"), 0o644))
		f := walk(t, root, "c")
		ok(t, root.RenameAt("c", walk(t, root, "dir"), "c2"), "renameat")
		_, _, err := f.Open(p9.ReadOnly)
		ok(t, err, "open after rename")
		if got, err := readAll(f); err != nil || string(got) != "C" {
			t.Errorf("read %q, %v", got, err)
		}
	})
}

func testUnlink(t *testing.T, e *env) {
	root := e.rootFile(t)
	mustHost(t, os.Mkdir(e.host("empty"), 0o755))
	for _, row := range []struct {
		name, target string
		flags        uint32
		want         linux.Errno // 0: removed
	}{
		{"file", "file.txt", 0, 0},                                              // unlink a file
		{"symlink", "to-canary", 0, 0},                                          // unlink the link, not the canary
		{"empty-dir-removedir", "empty", atRemoveDir, 0},                        // rmdir
		{"nonempty-dir-enotempty", "dir", atRemoveDir, linux.ENOTEMPTY},         // exactly ENOTEMPTY, not EEXIST
		{"dir-without-flag-eisdir", "dir", 0, linux.EISDIR},                     // unlink(2) of a directory
		{"file-with-removedir-enotdir", "file.txt", atRemoveDir, linux.ENOTDIR}, // rmdir(2) of a file
		{"missing-enoent", "missing", 0, linux.ENOENT},                          // nothing to remove
	} {
		e.run(t, row.name, func(t *testing.T) {
			if row.want == linux.ENOTDIR {
				mustHost(t, os.WriteFile(e.host(row.target), []byte("x"), 0o644))
			}
			err := root.UnlinkAt(row.target, row.flags)
			if row.want != 0 {
				wantErrno(t, err, row.want, "unlinkat %s %#x", row.target, row.flags)
				if row.want != linux.ENOENT {
					lstat(t, e.host(row.target))
				}
				return
			}
			ok(t, err, "unlinkat")
			absent(t, e.host(row.target))
		})
	}
}

// remover is p9's client-side Tremove.
type remover interface{ Remove() error }

func testRemove(t *testing.T, e *env) {
	root := e.rootFile(t)
	mustHost(t, os.Mkdir(e.host("empty"), 0o755))
	// Tremove of a file removes it.
	e.run(t, "file", func(t *testing.T) {
		ok(t, walk(t, root, "file.txt").(remover).Remove(), "remove")
		absent(t, e.host("file.txt"))
	})
	// Tremove of an empty directory removes it.
	e.run(t, "directory", func(t *testing.T) {
		ok(t, walk(t, root, "empty").(remover).Remove(), "remove")
		absent(t, e.host("empty"))
	})
	// Tremove of a non-empty directory answers ENOTEMPTY.
	e.run(t, "nonempty-directory-enotempty", func(t *testing.T) {
		wantErrno(t, walk(t, root, "dir").(remover).Remove(), linux.ENOTEMPTY, "remove dir")
		lstat(t, e.host("dir"))
	})
	// Tremove of a symlink removes the link only.
	e.run(t, "symlink", func(t *testing.T) {
		ok(t, walk(t, root, "to-canary").(remover).Remove(), "remove")
		absent(t, e.host("to-canary"))
	})
}

// modeRow is one exact-mode check: op creates or changes name with mode.
type modeRow struct {
	op   string // create, mkdir, chmod
	mode uint32
}

func (r modeRow) name() string { return fmt.Sprintf("%s-%04o", r.op, r.mode) }

// checkModes runs mode rows over raw frames (p9's client would mask the
// setuid and setgid bits) and checks the host mode is exactly the mode
// asked, whatever the server's umask.
func checkModes(t *testing.T, e *env, rows []modeRow) {
	for i, row := range rows {
		e.run(t, row.name(), func(t *testing.T) {
			r := e.raw(t, "", noFID)
			name := fmt.Sprintf("m%d", i)
			var typ uint32
			switch row.op {
			case "create":
				typ = unix.S_IFREG
				_, err := r.walk(0, 1)
				ok(t, err, "clone")
				_, err = r.lcreate(1, name, uint32(p9.ReadWrite), row.mode, noFID)
				ok(t, err, "lcreate")
			case "mkdir":
				typ = unix.S_IFDIR
				_, err := r.mkdir(0, name, row.mode, noFID)
				ok(t, err, "mkdir")
			case "chmod":
				typ = unix.S_IFREG
				mustHost(t, os.WriteFile(e.host(name), nil, 0o644))
				_, err := r.walk(0, 1, name)
				ok(t, err, "walk")
				ok(t, r.setattr(1, rawSetattr{valid: setattrMode, mode: row.mode}), "setattr mode")
			}
			st := lstat(t, e.host(name))
			if st.Mode != typ|row.mode {
				t.Errorf("host mode %#o, want %#o", st.Mode, typ|row.mode)
			}
		})
	}
}

func testModes(t *testing.T, e *env) {
	// Permission and sticky bits arrive exactly, umask notwithstanding.
	checkModes(t, e, []modeRow{
		{"create", 0o644}, {"create", 0o600}, // common modes
		{"create", 0o777}, {"mkdir", 0o777}, // bits a 022 umask would clear
		{"create", 0o000}, {"chmod", 0o000}, // no permission at all
		{"create", 0o1644}, {"mkdir", 0o1777}, {"chmod", 0o1777}, // sticky
		{"mkdir", 0o755}, {"mkdir", 0o700}, {"chmod", 0o640}, {"chmod", 0o777},
	})
}

func testModesSetID(t *testing.T, e *env) {
	// setuid and setgid arrive exactly on create, mkdir and chmod.
	checkModes(t, e, []modeRow{
		{"create", 0o4755}, {"chmod", 0o4755}, // setuid
		{"create", 0o2755}, {"mkdir", 0o2755}, {"chmod", 0o2711}, // setgid
		{"create", 0o6777}, {"mkdir", 0o3777}, {"chmod", 0o7777}, // all special bits at once
	})
	// Mknod keeps setuid too.
	e.run(t, "mknod-04640", func(t *testing.T) {
		_, err := e.rootFile(t).Mknod("suid-node", p9.ModeRegular|0o4640, 0, 0, p9.NoUID, p9.NoGID)
		ok(t, err, "mknod")
		if st := lstat(t, e.host("suid-node")); st.Mode != unix.S_IFREG|0o4640 {
			t.Errorf("host mode %#o", st.Mode)
		}
	})
	// An owner change and setuid in one Tsetattr: the chown (which clears
	// setuid) comes first, so the bit stays.
	e.run(t, "chown-then-setuid", func(t *testing.T) {
		needRoot(t)
		mustHost(t, os.WriteFile(e.host("own"), nil, 0o755))
		r := e.raw(t, "", noFID)
		_, err := r.walk(0, 1, "own")
		ok(t, err, "walk")
		ok(t, r.setattr(1, rawSetattr{valid: setattrMode | setattrUID | setattrGID, mode: 0o4755, uid: 1234, gid: 5678}), "setattr")
		st := lstat(t, e.host("own"))
		if st.Mode != unix.S_IFREG|0o4755 || st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("host mode %#o owner %d:%d", st.Mode, st.Uid, st.Gid)
		}
	})
}

func testOwner(t *testing.T, e *env) {
	needRoot(t)
	// Files created on a connection attached as uid 1234 belong to 1234,
	// with the gid the request carries.
	e.run(t, "attach-uid-create", func(t *testing.T) {
		r := e.raw(t, "", 1234)
		_, err := r.walk(0, 1)
		ok(t, err, "clone")
		_, err = r.lcreate(1, "owned", uint32(p9.ReadWrite), 0o644, 5678)
		ok(t, err, "lcreate")
		if st := lstat(t, e.host("owned")); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("host owner %d:%d", st.Uid, st.Gid)
		}
	})
	e.run(t, "attach-uid-mkdir", func(t *testing.T) {
		r := e.raw(t, "", 1234)
		_, err := r.mkdir(0, "owned-dir", 0o755, 5678)
		ok(t, err, "mkdir")
		if st := lstat(t, e.host("owned-dir")); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("host owner %d:%d", st.Uid, st.Gid)
		}
	})
	// The gid of Tlcreate applies even without an attach uid.
	e.run(t, "create-gid", func(t *testing.T) {
		r := e.raw(t, "", noFID)
		_, err := r.walk(0, 1)
		ok(t, err, "clone")
		_, err = r.lcreate(1, "gid-only", uint32(p9.ReadWrite), 0o644, 5678)
		ok(t, err, "lcreate")
		if st := lstat(t, e.host("gid-only")); st.Gid != 5678 {
			t.Errorf("host gid %d", st.Gid)
		}
	})
	// Tsetattr changes the owner.
	e.run(t, "setattr-chown", func(t *testing.T) {
		f := walk(t, e.rootFile(t), "file.txt")
		ok(t, f.SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 1111, GID: 2222}), "setattr")
		if st := lstat(t, e.host("file.txt")); st.Uid != 1111 || st.Gid != 2222 {
			t.Errorf("host owner %d:%d", st.Uid, st.Gid)
		}
	})
}
