package hostfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	for _, row := range []struct {
		name, root string
		want       unix.Errno
	}{
		{"missing", filepath.Join(dir, "missing"), unix.ENOENT},    // no such root
		{"not-a-directory", filepath.Join(dir, "f"), unix.ENOTDIR}, // the root must be a directory
	} {
		t.Run(row.name, func(t *testing.T) {
			fs, err := New(row.root)
			if !errors.Is(err, row.want) {
				t.Fatalf("New: %v, want %v", err, row.want)
			}
			if fs != nil || !strings.Contains(err.Error(), row.root) {
				t.Errorf("error %q does not name the root", err)
			}
		})
	}
}

func TestAttachAfterClose(t *testing.T) {
	fs, err := New(t.TempDir())
	must(t, err)
	f, err := fs.Attach()
	must(t, err)
	must(t, fs.Close())
	_, err = fs.Attach()
	wantErr(t, err, linux.EBADF, "Attach after Close")
	// A File attached before Close keeps working.
	_, _, _, err = f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	must(t, f.Close())
}

// TestWalkNeverFollows proves the attach point's own guards, without any
// server in front: names are validated and symlinks are never followed.
func TestWalkNeverFollows(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		_, root := attach(t, tr.root, opts...)
		for _, row := range []struct {
			name  string
			names []string
			want  linux.Errno
		}{
			{"dotdot", []string{".."}, linux.EINVAL},                               // never up
			{"dir-dotdot", []string{"dir", ".."}, linux.EINVAL},                    // not even below the root
			{"dot", []string{"."}, linux.EINVAL},                                   // no aliases
			{"empty", []string{""}, linux.EINVAL},                                  // no empty component
			{"slash", []string{"dir/sub.txt"}, linux.EINVAL},                       // one component per name
			{"absolute", []string{"/etc"}, linux.EINVAL},                           // never a path string
			{"nul", []string{"file.txt\x00"}, linux.EINVAL},                        // NUL would truncate the name
			{"too-long", []string{strings.Repeat("n", 256)}, linux.ENAMETOOLONG},   // NAME_MAX
			{"through-dir-symlink", []string{"link-out", "secret"}, linux.ENOTDIR}, // a symlink is not a directory
			{"through-file-symlink", []string{"link-file", "x"}, linux.ENOTDIR},
			{"through-file", []string{"file.txt", "x"}, linux.ENOTDIR},
			{"missing", []string{"missing"}, linux.ENOENT},
		} {
			t.Run(row.name, func(t *testing.T) {
				_, f, err := root.Walk(row.names)
				wantErr(t, err, row.want, "walk")
				if f != nil {
					t.Errorf("walk returned a File with an error")
				}
				_, _, _, _, err = root.WalkGetAttr(row.names)
				wantErr(t, err, row.want, "walkgetattr")
			})
		}
		// A failed walk returns the QIDs walked before the failure, and
		// no File.
		t.Run("partial-qids", func(t *testing.T) {
			for _, row := range []struct {
				names []string
				qids  int
			}{
				{[]string{"missing"}, 0},                 // nothing walked
				{[]string{"dir", "missing"}, 1},          // dir walked
				{[]string{"dir", "sub.txt", "x"}, 2},     // through a file
				{[]string{"link-out", "secret", "x"}, 1}, // through a symlink
			} {
				qids, f, err := root.Walk(row.names)
				if err == nil || f != nil || len(qids) != row.qids {
					t.Errorf("walk %v: %d qids, file %v, %v", row.names, len(qids), f, err)
				}
				qids, f, _, _, err = root.WalkGetAttr(row.names)
				if err == nil || f != nil || len(qids) != row.qids {
					t.Errorf("walkgetattr %v: %d qids, file %v, %v", row.names, len(qids), f, err)
				}
			}
		})
		// Walking to a symlink pins the link itself.
		t.Run("symlink-is-the-link", func(t *testing.T) {
			qids, l, valid, attr, err := root.WalkGetAttr([]string{"link-out"})
			must(t, err)
			defer l.Close()
			st := lstatT(t, tr.path("link-out"))
			if qids[0].Type != p9.TypeSymlink || !valid.Mode || uint32(attr.Mode) != st.Mode || attr.Size != uint64(st.Size) {
				t.Errorf("qid %v attr %v, host mode %o", qids[0], attr, st.Mode)
			}
			_, _, err = l.Walk([]string{"secret"})
			wantErr(t, err, linux.ENOTDIR, "walk from the symlink fid")
			_, _, err = l.Open(p9.ReadOnly)
			wantErr(t, err, linux.ELOOP, "open the symlink fid")
			_, err = l.Mkdir("x", 0o755, p9.NoUID, p9.NoGID)
			wantErr(t, err, linux.ENOTDIR, "mkdir in the symlink fid")
			if _, err := os.Lstat(filepath.Join(tr.outside, "x")); err == nil {
				t.Errorf("ESCAPE: created outside")
			}
		})
	})
}

// TestMutationNameChecks proves every operation taking a name validates it
// itself.
func TestMutationNameChecks(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	file := walkTo(t, root, "file.txt")
	for _, bad := range []string{"", ".", "..", "../escaped", "a/b", "x\x00y"} {
		errs := map[string]error{}
		_, _, _, errs["create"] = root.Create(bad, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
		_, errs["mkdir"] = root.Mkdir(bad, 0o755, p9.NoUID, p9.NoGID)
		_, errs["symlink"] = root.Symlink("x", bad, p9.NoUID, p9.NoGID)
		_, errs["mknod"] = root.Mknod(bad, p9.ModeRegular|0o644, 0, 0, p9.NoUID, p9.NoGID)
		errs["link"] = root.Link(file, bad)
		errs["rename-old"] = root.RenameAt(bad, root, "x")
		errs["rename-new"] = root.RenameAt("file.txt", root, bad)
		errs["unlinkat"] = root.UnlinkAt(bad, 0)
		errs["rename-file"] = file.Rename(root, bad)
		for op, err := range errs {
			wantErr(t, err, linux.EINVAL, op+" "+strings.ReplaceAll(bad, "\x00", "\\0"))
		}
	}
	if _, err := os.Lstat(filepath.Join(tr.base, "escaped")); err == nil {
		t.Errorf("ESCAPE: created beside the export")
	}
	lstatT(t, tr.path("file.txt"))
}

func TestOpen(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		must(t, unix.Mkfifo(tr.path("fifo"), 0o666))
		must(t, unix.Mknod(tr.path("sock"), unix.S_IFSOCK|0o666, 0))
		_, root := attach(t, tr.root, opts...)
		for _, row := range []struct {
			name  string
			flags p9.OpenFlags
			want  linux.Errno
		}{
			{"file.txt", p9.ReadWrite, 0},                    // a regular file opens
			{"dir", p9.ReadOnly, 0},                          // a directory opens read-only
			{"dir", p9.WriteOnly, linux.EISDIR},              // never for writing
			{"file.txt", p9.OpenFlagsModeMask, linux.EINVAL}, // access mode 3 is reserved
			{"fifo", p9.ReadOnly, linux.ENXIO},               // never opened: would block
			{"fifo", p9.WriteOnly, linux.ENXIO},              // never opened
			{"sock", p9.ReadWrite, linux.ENXIO},              // never opened
			{"link-file", p9.ReadOnly, linux.ELOOP},          // never followed
			{"link-out", p9.ReadOnly, linux.ELOOP},           // never followed
		} {
			t.Run(row.name, func(t *testing.T) {
				f := walkTo(t, root, row.name)
				_, _, err := f.Open(row.flags)
				if row.want == 0 {
					must(t, err)
					_, _, err = f.Open(row.flags)
					wantErr(t, err, linux.EINVAL, "second open")
					return
				}
				wantErr(t, err, row.want, "open")
				if f.open.Load() != nil {
					t.Errorf("failed open left the file open")
				}
			})
		}
		// Flags hostfs does not honour are masked: O_APPEND would
		// move writes to the end, O_NOFOLLOW|O_DIRECTORY would refuse
		// the file, O_CREAT|O_EXCL would fail.
		t.Run("masked-flags", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			_, _, err := f.Open(p9.WriteOnly | 0o2000 | 0o400000 | 0o200000 | 0o100 | 0o200)
			must(t, err)
			_, err = f.WriteAt([]byte("J"), 0)
			must(t, err)
			if got, _ := os.ReadFile(tr.path("file.txt")); string(got) != "Jello" {
				t.Errorf("host content %q", got)
			}
		})
		// Calls that need an open file answer EBADF before Open.
		t.Run("not-open-ebadf", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			_, err := f.ReadAt(make([]byte, 1), 0)
			wantErr(t, err, linux.EBADF, "read")
			_, err = f.WriteAt([]byte("x"), 0)
			wantErr(t, err, linux.EBADF, "write")
			wantErr(t, f.FSync(), linux.EBADF, "fsync")
			_, err = f.Readdir(0, 100)
			wantErr(t, err, linux.EBADF, "readdir")
			_, err = f.Lock(1, p9.WriteLock, 0, 0, 0, "c")
			wantErr(t, err, linux.EBADF, "lock")
			_, _, _, _, _, err = f.GetLock(p9.WriteLock, 0, 0, 1, "c")
			wantErr(t, err, linux.EBADF, "getlock")
		})
		// Offsets are validated before use.
		t.Run("offsets", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			_, _, err := f.Open(p9.ReadWrite)
			must(t, err)
			_, err = f.ReadAt(make([]byte, 1), -1)
			wantErr(t, err, linux.EINVAL, "read at -1")
			_, err = f.WriteAt([]byte("x"), -1)
			wantErr(t, err, linux.EINVAL, "write at -1")
			_, err = f.WriteAt([]byte("xy"), maxInt64-1)
			wantErr(t, err, linux.EINVAL, "write past 2^63")
			_, err = f.Readdir(0, 100)
			wantErr(t, err, linux.ENOTDIR, "readdir of a file")
		})
	})
}

func TestCreateModesAndOwners(t *testing.T) {
	// The test process has the usual umask (022), unlike the daemon: the
	// exact modes prove hostfs corrects for it.
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	tr := newTree(t)
	_, root := attach(t, tr.root)
	for _, row := range []struct {
		op   string
		mode uint32
	}{
		{"create", 0o666}, {"mkdir", 0o777}, {"mknod", 0o666}, // bits the umask clears come back
		{"create", 0o4755}, {"create", 0o2775}, {"mknod-fifo", 0o4666}, // setuid/setgid kept
		{"create", 0o1600}, {"mkdir", 0o1777}, // sticky kept
		{"mkdir", 0o2770}, // setgid directory
	} {
		name := row.op + "-" + fmtOctal(row.mode)
		t.Run(name, func(t *testing.T) {
			var typ uint32
			var err error
			switch row.op {
			case "create":
				typ = unix.S_IFREG
				var f p9.File
				f, _, _, err = root.Create(name, p9.ReadWrite, p9.FileMode(row.mode), p9.NoUID, p9.NoGID)
				if err == nil {
					f.Close()
				}
			case "mkdir":
				typ = unix.S_IFDIR
				_, err = root.Mkdir(name, p9.FileMode(row.mode), p9.NoUID, p9.NoGID)
			case "mknod":
				typ = unix.S_IFREG
				_, err = root.Mknod(name, p9.FileMode(row.mode), 0, 0, p9.NoUID, p9.NoGID)
			case "mknod-fifo":
				typ = unix.S_IFIFO
				_, err = root.Mknod(name, p9.ModeNamedPipe|p9.FileMode(row.mode), 0, 0, p9.NoUID, p9.NoGID)
			}
			must(t, err)
			if st := lstatT(t, tr.path(name)); st.Mode != typ|row.mode {
				t.Errorf("host mode %#o, want %#o", st.Mode, typ|row.mode)
			}
		})
	}
	// A directory created in a setgid directory keeps the inherited
	// setgid bit, as on Linux.
	t.Run("setgid-inheritance", func(t *testing.T) {
		must(t, os.Mkdir(tr.path("sgid"), 0o755))
		must(t, unix.Chmod(tr.path("sgid"), 0o2755))
		_, err := walkTo(t, root, "sgid").Mkdir("child", 0o750, p9.NoUID, p9.NoGID)
		must(t, err)
		if st := lstatT(t, tr.path("sgid/child")); st.Mode != unix.S_IFDIR|0o2750 {
			t.Errorf("host mode %#o", st.Mode)
		}
	})
	// As root, the guest's ids are applied and setuid survives the chown.
	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		f, _, _, err := root.Create("owned", p9.ReadWrite, 0o4750, 1001, 1002)
		must(t, err)
		f.Close()
		_, err = root.Mkdir("owned-dir", 0o2750, 1003, 1004)
		must(t, err)
		_, err = root.Symlink("target", "owned-link", 1005, 1006)
		must(t, err)
		_, err = root.Mknod("owned-fifo", p9.ModeNamedPipe|0o640, 0, 0, 1007, p9.NoGID)
		must(t, err)
		for _, c := range []struct {
			name     string
			uid, gid uint32
			mode     uint32
		}{
			{"owned", 1001, 1002, unix.S_IFREG | 0o4750},
			{"owned-dir", 1003, 1004, unix.S_IFDIR | 0o2750},
			{"owned-link", 1005, 1006, unix.S_IFLNK | 0o777},
			{"owned-fifo", 1007, 0, unix.S_IFIFO | 0o640},
		} {
			if st := lstatT(t, tr.path(c.name)); st.Uid != c.uid || st.Gid != c.gid || st.Mode != c.mode {
				t.Errorf("%s: %d:%d %#o, want %d:%d %#o", c.name, st.Uid, st.Gid, st.Mode, c.uid, c.gid, c.mode)
			}
		}
	})
	// Device nodes and sockets are never created.
	t.Run("mknod-refused", func(t *testing.T) {
		for _, mode := range []p9.FileMode{p9.ModeCharacterDevice | 0o666, p9.ModeBlockDevice | 0o666, p9.ModeSocket | 0o666, p9.ModeDirectory | 0o755} {
			_, err := root.Mknod("node", mode, 1, 3, p9.NoUID, p9.NoGID)
			wantErr(t, err, linux.EPERM, "mknod "+fmtOctal(uint32(mode)))
		}
		_, err := root.Mknod("node", p9.ModeSymlink|0o777, 0, 0, p9.NoUID, p9.NoGID)
		wantErr(t, err, linux.EINVAL, "mknod symlink type")
		if _, err := os.Lstat(tr.path("node")); err == nil {
			t.Errorf("a node was created")
		}
	})
	// Create pins the inode its open made, and the new File is open.
	t.Run("create-is-open", func(t *testing.T) {
		f, qid, _, err := root.Create("pinned", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
		must(t, err)
		defer f.Close()
		must(t, os.Rename(tr.path("pinned"), tr.path("moved")))
		_, err = f.WriteAt([]byte("data"), 0)
		must(t, err)
		if got, _ := os.ReadFile(tr.path("moved")); string(got) != "data" {
			t.Errorf("moved holds %q", got)
		}
		st := lstatT(t, tr.path("moved"))
		if qid.Path != st.Ino || qid.Type != p9.TypeRegular {
			t.Errorf("qid %v, host ino %d", qid, st.Ino)
		}
	})
}

// fmtOctal formats a mode for test names.
func fmtOctal(m uint32) string {
	const digits = "01234567"
	if m == 0 {
		return "0"
	}
	var b []byte
	for ; m > 0; m >>= 3 {
		b = append([]byte{digits[m&7]}, b...)
	}
	return "0" + string(b)
}

func TestLinkRenameRemove(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		_, root := attach(t, tr.root, opts...)
		// A hard link to a symlink links the symlink itself.
		t.Run("link-symlink", func(t *testing.T) {
			must(t, root.Link(walkTo(t, root, "link-file"), "hl"))
			a, b := lstatT(t, tr.path("link-file")), lstatT(t, tr.path("hl"))
			if b.Mode&unix.S_IFMT != unix.S_IFLNK || a.Ino != b.Ino {
				t.Errorf("hl: mode %o ino %d, link ino %d", b.Mode, b.Ino, a.Ino)
			}
			if st := lstatT(t, filepath.Join(tr.outside, "secret")); st.Nlink != 1 {
				t.Errorf("ESCAPE: the target got a link")
			}
		})
		// A hard link to a file, and to a file already unlinked.
		t.Run("link-file", func(t *testing.T) {
			must(t, root.Link(walkTo(t, root, "file.txt"), "hard"))
			if st := lstatT(t, tr.path("hard")); st.Nlink != 2 {
				t.Errorf("nlink %d", st.Nlink)
			}
			must(t, os.WriteFile(tr.path("gone"), nil, 0o644))
			g := walkTo(t, root, "gone")
			must(t, os.Remove(tr.path("gone")))
			wantErr(t, root.Link(g, "revived"), linux.ENOENT, "link an unlinked file")
		})
		t.Run("link-directory-eperm", func(t *testing.T) {
			wantErr(t, root.Link(walkTo(t, root, "dir"), "dl"), linux.EPERM, "link dir")
		})
		// Rename of the File itself follows it (Remove uses the new name).
		t.Run("rename-then-remove", func(t *testing.T) {
			must(t, os.WriteFile(tr.path("r1"), nil, 0o644))
			f := walkTo(t, root, "r1")
			dir := walkTo(t, root, "dir")
			must(t, f.Rename(dir, "r2"))
			lstatT(t, tr.path("dir/r2"))
			must(t, f.Remove())
			if _, err := os.Lstat(tr.path("dir/r2")); err == nil {
				t.Errorf("dir/r2 still exists")
			}
		})
		// Remove refuses when the name no longer names the pinned inode.
		t.Run("remove-stale", func(t *testing.T) {
			must(t, os.WriteFile(tr.path("s1"), nil, 0o644))
			f := walkTo(t, root, "s1")
			must(t, os.Rename(tr.path("s1"), tr.path("s2")))
			must(t, os.WriteFile(tr.path("s1"), []byte("other"), 0o644))
			wantErr(t, f.Remove(), linux.ESTALE, "remove after a host rename")
			lstatT(t, tr.path("s1"))
			wantErr(t, f.Rename(root, "s3"), linux.ESTALE, "rename after a host rename")
		})
		t.Run("remove-kinds", func(t *testing.T) {
			must(t, os.Mkdir(tr.path("empty"), 0o755))
			must(t, walkTo(t, root, "empty").Remove())
			wantErr(t, walkTo(t, root, "dir").Remove(), linux.ENOTEMPTY, "remove non-empty dir")
			wantErr(t, root.Remove(), linux.EBUSY, "remove the root")
			wantErr(t, root.Rename(root, "x"), linux.EBUSY, "rename the root")
			wantErr(t, root.UnlinkAt("file.txt", 0x1), linux.EINVAL, "unlinkat with unknown flags")
			wantErr(t, root.UnlinkAt("dir", 0x200), linux.ENOTEMPTY, "rmdir non-empty")
		})
		// Renamed (p9's hook) updates where Remove looks.
		t.Run("renamed-hook", func(t *testing.T) {
			must(t, os.WriteFile(tr.path("h1"), nil, 0o644))
			f := walkTo(t, root, "h1")
			dir := walkTo(t, root, "dir")
			must(t, root.RenameAt("h1", dir, "h2"))
			f.Renamed(dir, "h2")
			must(t, f.Remove())
			if _, err := os.Lstat(tr.path("dir/h2")); err == nil {
				t.Errorf("dir/h2 still exists")
			}
		})
	})
	// Files of different exports never mix.
	t.Run("cross-export-exdev", func(t *testing.T) {
		a, b := newTree(t), newTree(t)
		_, ra := attach(t, a.root)
		_, rb := attach(t, b.root)
		wantErr(t, ra.Link(walkTo(t, rb, "file.txt"), "x"), linux.EXDEV, "link across exports")
		wantErr(t, ra.RenameAt("file.txt", rb, "x"), linux.EXDEV, "rename across exports")
		wantErr(t, walkTo(t, ra, "file.txt").Rename(rb, "x"), linux.EXDEV, "rename a file across exports")
	})
}

func TestSetAttr(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		_, root := attach(t, tr.root, opts...)
		ts := func(sec, nsec int64) unix.Timespec { return unix.Timespec{Sec: sec, Nsec: nsec} }
		// Times on a symlink change the link only (also through the
		// parent fallback).
		t.Run("symlink-times", func(t *testing.T) {
			secret := lstatT(t, filepath.Join(tr.outside, "secret"))
			l := walkTo(t, root, "link-file")
			must(t, l.SetAttr(p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true},
				p9.SetAttr{ATimeSeconds: 10, ATimeNanoSeconds: 11, MTimeSeconds: 20, MTimeNanoSeconds: 21}))
			if st := lstatT(t, tr.path("link-file")); st.Atim != ts(10, 11) || st.Mtim != ts(20, 21) {
				t.Errorf("link times %v %v", st.Atim, st.Mtim)
			}
			if st := lstatT(t, filepath.Join(tr.outside, "secret")); st.Mtim != secret.Mtim || st.Atim != secret.Atim {
				t.Errorf("ESCAPE: target times changed")
			}
			wantErr(t, l.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}), linux.EOPNOTSUPP, "chmod symlink")
			wantErr(t, l.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}), linux.EINVAL, "truncate symlink")
		})
		// A symlink whose name was replaced: the fallback refuses.
		t.Run("symlink-times-stale", func(t *testing.T) {
			must(t, os.Symlink("x", tr.path("sl")))
			l := walkTo(t, root, "sl")
			must(t, os.Rename(tr.path("sl"), tr.path("sl2")))
			err := l.SetAttr(p9.SetAttrMask{MTime: true}, p9.SetAttr{})
			if l.fs.noEmptyPath {
				wantErr(t, err, linux.ESTALE, "times through a stale name")
			} else {
				must(t, err)
			}
		})
		// Times on files and directories, with the order size, then
		// times.
		t.Run("file-and-dir", func(t *testing.T) {
			for _, name := range []string{"file.txt", "dir"} {
				f := walkTo(t, root, name)
				mask := p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true, Permissions: true}
				if name == "file.txt" {
					mask.Size = true
				}
				must(t, f.SetAttr(mask, p9.SetAttr{Size: 2, MTimeSeconds: 30, MTimeNanoSeconds: 31, Permissions: 0o1710}))
				st := lstatT(t, tr.path(name))
				if st.Mtim != ts(30, 31) || st.Mode&0o7777 != 0o1710 || (name == "file.txt" && st.Size != 2) {
					t.Errorf("%s: mtime %v mode %o size %d", name, st.Mtim, st.Mode, st.Size)
				}
			}
		})
		t.Run("validation", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			wantErr(t, f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 1 << 63}), linux.EINVAL, "size 2^63")
			wantErr(t, f.SetAttr(p9.SetAttrMask{ATime: true, ATimeNotSystemTime: true}, p9.SetAttr{ATimeNanoSeconds: 1e9}), linux.EINVAL, "atime nsec")
			wantErr(t, walkTo(t, root, "dir").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}), linux.EISDIR, "truncate dir")
			must(t, f.SetAttr(p9.SetAttrMask{CTime: true}, p9.SetAttr{}))
		})
	})
}

// TestReadOnly calls every mutation directly on a read-only export.
func TestReadOnly(t *testing.T) {
	tr := newTree(t)
	before := treeSnapshot(t, tr.root)
	_, root := attach(t, tr.root, ReadOnly())
	file := walkTo(t, root, "file.txt")
	dir := walkTo(t, root, "dir")
	errs := map[string]error{}
	_, _, _, errs["create"] = root.Create("new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	_, errs["mkdir"] = root.Mkdir("new", 0o755, p9.NoUID, p9.NoGID)
	_, errs["symlink"] = root.Symlink("t", "new", p9.NoUID, p9.NoGID)
	_, errs["mknod"] = root.Mknod("new", p9.ModeRegular|0o644, 0, 0, p9.NoUID, p9.NoGID)
	errs["link"] = root.Link(file, "new")
	errs["renameat"] = root.RenameAt("file.txt", dir, "new")
	errs["rename"] = file.Rename(dir, "new")
	errs["unlinkat"] = root.UnlinkAt("file.txt", 0)
	errs["remove"] = walkTo(t, root, "file.txt").Remove()
	errs["setattr-mode"] = file.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777})
	errs["setattr-size"] = file.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{})
	errs["setattr-times"] = file.SetAttr(p9.SetAttrMask{MTime: true}, p9.SetAttr{})
	errs["setattr-owner"] = file.SetAttr(p9.SetAttrMask{UID: true}, p9.SetAttr{UID: 0})
	errs["setxattr"] = file.SetXattr("user.x", []byte("v"), 0)
	errs["removexattr"] = file.RemoveXattr("user.x")
	_, _, errs["open-write"] = walkTo(t, root, "file.txt").Open(p9.WriteOnly)
	_, _, errs["open-rdwr"] = walkTo(t, root, "file.txt").Open(p9.ReadWrite)
	_, _, errs["open-trunc"] = walkTo(t, root, "file.txt").Open(p9.ReadOnly | 0o1000)
	for op, err := range errs {
		wantErr(t, err, linux.EROFS, op)
	}
	// Reads work.
	_, _, err := file.Open(p9.ReadOnly)
	must(t, err)
	buf := make([]byte, 10)
	n, err := file.ReadAt(buf, 0)
	if err != nil || string(buf[:n]) != "hello" {
		t.Errorf("read %q, %v", buf[:n], err)
	}
	if after := treeSnapshot(t, tr.root); after != before {
		t.Errorf("read-only export changed:\n%s\n->\n%s", before, after)
	}
}

// treeSnapshot describes a tree's names, modes, sizes and mtimes.
func treeSnapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := lstatT(t, p)
		b.WriteString(strings.Join([]string{p, fmtOctal(st.Mode), itoa(st.Size), itoa(st.Mtim.Nano()), itoa(int64(st.Nlink))}, " ") + "\n")
		return nil
	})
	must(t, err)
	return b.String()
}

func itoa(v int64) string {
	if v == 0 {
		return "0"
	}
	neg := v < 0
	if neg {
		v = -v
	}
	var b []byte
	for ; v > 0; v /= 10 {
		b = append([]byte{byte('0' + v%10)}, b...)
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

func TestErrnoTable(t *testing.T) {
	for host, guest := range errnoTable {
		// On x86 and arm Linux the numbers agree (the table exists for
		// hosts where they do not, and to make the set explicit).
		if (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") && uintptr(host) != uintptr(guest) {
			t.Errorf("%v (%d) maps to %v (%d)", host, host, guest, guest)
		}
	}
	for _, row := range []struct {
		in   error
		want error
	}{
		{unix.ENOTEMPTY, linux.ENOTEMPTY}, // p9's ExtractErrno says EEXIST
		{unix.EPERM, linux.EPERM},         // p9's ExtractErrno says EACCES
		{unix.EACCES, linux.EACCES},
		{unix.ELOOP, linux.ELOOP},
		{unix.EOPNOTSUPP, linux.EOPNOTSUPP},
		{unix.Errno(0x7fff), linux.EIO},         // unknown: EIO
		{errors.New("not an errno"), linux.EIO}, // not a system error: EIO
		{linux.EXDEV, linux.EXDEV},              // already a linux.Errno
		{nil, nil},
	} {
		if got := hostErrno(row.in); got != row.want {
			t.Errorf("hostErrno(%v) = %v, want %v", row.in, got, row.want)
		}
	}
}

func TestWithLogger(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	fs, err := New(t.TempDir(), WithLogger(l.WithField("daemon", "test")))
	must(t, err)
	defer fs.Close()
	if fs.log.Logger != l || fs.log.Data["subsystem"] != "hostfs" || fs.log.Data["daemon"] != "test" || fs.log.Data["export"] == nil {
		t.Errorf("logger fields %v", fs.log.Data)
	}
	quiet, err := New(t.TempDir())
	must(t, err)
	defer quiet.Close()
	if quiet.log.Logger.Out != io.Discard || quiet.log.Data["subsystem"] != "hostfs" {
		t.Errorf("default logger is not quiet")
	}
}

// TestSpliceRead: SpliceRead moves exactly the file's bytes at the offset
// into the pipe, fewer at the end of the file and none past it, and
// refuses a File not open for reading without moving anything.
func TestSpliceRead(t *testing.T) {
	tr := newTree(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320,000 bytes
	must(t, os.WriteFile(tr.path("big"), data, 0o644))
	_, root := attach(t, tr.root)
	f := openRW(t, root, "big")
	var fds [2]int
	must(t, unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	_, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, 1<<20)
	must(t, err)
	drain := func(n int) []byte {
		buf := make([]byte, n)
		got := 0
		for got < n {
			m, err := unix.Read(fds[0], buf[got:])
			must(t, err)
			got += m
		}
		return buf
	}
	for _, tc := range []struct {
		off   int64
		count int
		want  int
	}{
		{0, 65536, 65536},                 // from the start
		{4095, 100000, 100000},            // inside a page
		{int64(len(data)) - 10, 4096, 10}, // short at the end
		{int64(len(data)), 4096, 0},       // at the end
		{int64(len(data)) + 1, 4096, 0},   // past it
	} {
		n, err := f.SpliceRead(fds[1], tc.off, tc.count)
		must(t, err)
		if n != tc.want {
			t.Fatalf("SpliceRead(%d, %d) = %d, want %d", tc.off, tc.count, n, tc.want)
		}
		if got := drain(n); n > 0 && !bytes.Equal(got, data[tc.off:tc.off+int64(n)]) {
			t.Fatalf("SpliceRead(%d, %d): the pipe holds other bytes than the file's", tc.off, tc.count)
		}
	}
	w := walkTo(t, root, "big")
	_, _, err = w.Open(p9.WriteOnly)
	must(t, err)
	if n, err := w.SpliceRead(fds[1], 0, 4096); err == nil || n != 0 {
		t.Fatalf("SpliceRead of a write-only File = %d, %v; want 0 and an error", n, err)
	}
}
