package conformance

import (
	"os"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("attach", testAttach)
	register("walk", testWalk)
	register("getattr", testGetAttr)
	register("statfs", testStatFS)
	register("readlink", testReadlink)
}

func testAttach(t *testing.T, e *env) {
	for _, aname := range []string{"", "/"} {
		// "" and "/" both attach the root export.
		e.run(t, "root-"+map[string]string{"": "empty", "/": "slash"}[aname], func(t *testing.T) {
			f := e.attach(t, aname)
			qid, _, attr, err := f.GetAttr(p9.AttrMaskAll)
			ok(t, err, "getattr root")
			st := lstat(t, e.root)
			if qid.Type != p9.TypeDir || !attr.Mode.IsDir() || uint32(attr.Mode) != st.Mode {
				t.Errorf("root: qid %v mode %o, host mode %o", qid, attr.Mode, st.Mode)
			}
			walk(t, f, "file.txt")
		})
	}
	// A mount's tag attaches that export.
	e.run(t, "tag-reaches-mount", func(t *testing.T) {
		f := e.attach(t, ROTag)
		walk(t, f, "ro.txt")
		_, _, err := f.Walk([]string{"file.txt"})
		wantErrno(t, err, linux.ENOENT, "root export file from the ro export")
	})
	// An aname that is no export answers ENOENT.
	e.run(t, "unknown-aname-enoent", func(t *testing.T) {
		_, err := e.client(t, 64<<10).Attach("no-such-export")
		wantErrno(t, err, linux.ENOENT, "attach no-such-export")
	})
	// An aname is an export name, never a path walked in the root export.
	e.run(t, "aname-is-not-walked", func(t *testing.T) {
		_, err := e.client(t, 64<<10).Attach("dir")
		wantErrno(t, err, linux.ENOENT, "attach dir")
	})
	// A root-export entry named like a tag stays reachable by walking,
	// and the tag still attaches the mount: nothing is synthesized.
	e.run(t, "tag-does-not-shadow-root-entries", func(t *testing.T) {
		mustHost(t, os.Mkdir(e.host(ROTag), 0o755))
		mustHost(t, os.WriteFile(e.host(ROTag+"/shadow.txt"), []byte("s"), 0o644))
		walk(t, e.rootFile(t), ROTag, "shadow.txt")
		m := e.attach(t, ROTag)
		walk(t, m, "ro.txt")
		_, _, err := m.Walk([]string{"shadow.txt"})
		wantErrno(t, err, linux.ENOENT, "shadow.txt through the tag")
	})
	// ".." in an aname never reaches above an export.
	for _, aname := range []string{"..", "/..", "../canary-dir", "ro/.."} {
		e.run(t, "dotdot-"+strings.NewReplacer("/", "_", ".", "d").Replace(aname), func(t *testing.T) {
			f, err := e.client(t, 64<<10).Attach(aname)
			if err == nil {
				// Whatever it attached must not be outside.
				_, _, err := f.Walk([]string{"canary.txt"})
				wantFail(t, err, "walk canary.txt from attach %q", aname)
				_, _, err = f.Walk([]string{"inner"})
				wantFail(t, err, "walk inner from attach %q", aname)
			}
		})
	}
}

func testWalk(t *testing.T, e *env) {
	root := e.rootFile(t)
	// One component: one QID of the right type, stable across walks.
	e.run(t, "one-component", func(t *testing.T) {
		q1, f, err := root.Walk([]string{"file.txt"})
		ok(t, err, "walk")
		defer f.Close()
		q2, g, err := root.Walk([]string{"file.txt"})
		ok(t, err, "walk again")
		defer g.Close()
		if len(q1) != 1 || q1[0].Type != p9.TypeRegular || q1[0] != q2[0] {
			t.Errorf("qids %v then %v", q1, q2)
		}
	})
	// Several components in one walk: one QID per component.
	e.run(t, "multi-component", func(t *testing.T) {
		qids, f, err := root.Walk([]string{"dir", "sub.txt"})
		ok(t, err, "walk dir/sub.txt")
		defer f.Close()
		if len(qids) != 2 || qids[0].Type != p9.TypeDir || qids[1].Type != p9.TypeRegular {
			t.Errorf("qids %v", qids)
		}
	})
	// A missing name answers ENOENT.
	e.run(t, "enoent", func(t *testing.T) {
		_, _, err := root.Walk([]string{"missing"})
		wantErrno(t, err, linux.ENOENT, "walk missing")
	})
	// Walking from a regular file answers ENOTDIR.
	e.run(t, "through-file-enotdir", func(t *testing.T) {
		_, _, err := walk(t, root, "file.txt").Walk([]string{"x"})
		wantErrno(t, err, linux.ENOTDIR, "walk x from file.txt")
	})
	// Walking from a symlink never follows it: ENOTDIR.
	e.run(t, "through-symlink-enotdir", func(t *testing.T) {
		_, _, err := walk(t, root, "to-canary-dir").Walk([]string{"inner"})
		wantErrno(t, err, linux.ENOTDIR, "walk inner from the symlink fid")
	})
	// A walk that fails after its first name is a partial Rwalk: the
	// QIDs of the names walked, no error, no new fid (9P's walk(5)).
	for _, row := range []struct {
		name  string
		names []string
		qids  int
	}{
		{"missing", []string{"dir", "missing"}, 1},                 // ENOENT at the second name
		{"through-file", []string{"file.txt", "x"}, 1},             // ENOTDIR at the second name
		{"through-symlink", []string{"to-canary-dir", "inner"}, 1}, // never followed
		{"deep", []string{"dir", "sub.txt", "x", "y"}, 2},          // stops at the file
	} {
		e.run(t, "partial-"+row.name, func(t *testing.T) {
			qids, f, err := root.Walk(row.names)
			ok(t, err, "walk %v", row.names)
			if len(qids) != row.qids {
				t.Errorf("walk %v: %d QIDs, want %d", row.names, len(qids), row.qids)
			}
			// The new fid must not exist: using it fails.
			_, _, _, err = f.GetAttr(p9.AttrMaskAll)
			wantFail(t, err, "getattr of the fid a partial walk named")
		})
	}
	// Walking to a symlink gives the link itself.
	e.run(t, "symlink-not-followed", func(t *testing.T) {
		qids, f, err := root.Walk([]string{"to-canary"})
		ok(t, err, "walk to-canary")
		_, _, attr, err := f.GetAttr(p9.AttrMaskAll)
		ok(t, err, "getattr")
		if qids[0].Type != p9.TypeSymlink || !attr.Mode.IsSymlink() {
			t.Errorf("qid %v mode %o, want a symlink", qids[0], attr.Mode)
		}
	})
	// An empty walk clones the fid.
	e.run(t, "clone", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		qids, c, err := f.Walk(nil)
		ok(t, err, "clone")
		q1, _, _, err := f.GetAttr(p9.AttrMaskAll)
		ok(t, err, "getattr")
		q2, _, _, err := c.GetAttr(p9.AttrMaskAll)
		ok(t, err, "getattr clone")
		if len(qids) != 0 || q1 != q2 {
			t.Errorf("clone: qids %v, %v vs %v", qids, q1, q2)
		}
		ok(t, f.Close(), "clunk original")
		_, _, _, err = c.GetAttr(p9.AttrMaskAll)
		ok(t, err, "clone outlives the original")
	})
	// Invalid names answer EINVAL.
	for _, row := range []struct{ name, bad string }{
		{"empty", ""},            // no empty component
		{"dot", "."},             // no alias of the directory itself
		{"dotdot", ".."},         // never up
		{"slash", "dir/sub.txt"}, // one component per name, never a path
		{"lone-slash", "/"},      // never the host root
		{"nul", "file.txt\x00x"}, // a NUL would truncate the name on the host
	} {
		e.run(t, "invalid-name-"+row.name, func(t *testing.T) {
			_, _, err := root.Walk([]string{row.bad})
			wantErrno(t, err, linux.EINVAL, "walk %q", row.bad)
		})
	}
	// QID paths: equal for hard links, distinct for distinct inodes.
	e.run(t, "qid-paths", func(t *testing.T) {
		mustHost(t, os.Link(e.host("file.txt"), e.host("hard.txt")))
		seen := map[uint64]string{}
		for _, name := range []string{"file.txt", "dir", "to-root", "to-canary", "to-canary-dir", "dir/sub.txt"} {
			qids, f, err := walkFull(root, strings.Split(name, "/"))
			ok(t, err, "walk %s", name)
			f.Close()
			p := qids[len(qids)-1].Path
			if other, dup := seen[p]; dup {
				t.Errorf("%s and %s share QID path %#x", name, other, p)
			}
			seen[p] = name
		}
		a, _, _ := root.Walk([]string{"file.txt"})
		b, _, _ := root.Walk([]string{"hard.txt"})
		if len(a) != 1 || len(b) != 1 || a[0].Path != b[0].Path {
			t.Errorf("hard links: %v vs %v", a, b)
		}
	})
	// WalkGetAttr returns the attributes of the walked file.
	e.run(t, "walkgetattr", func(t *testing.T) {
		qids, f, valid, attr, err := root.WalkGetAttr([]string{"dir", "sub.txt"})
		ok(t, err, "walkgetattr")
		defer f.Close()
		st := lstat(t, e.host("dir/sub.txt"))
		if len(qids) != 2 || !valid.Mode || !valid.Size || uint32(attr.Mode) != st.Mode || attr.Size != uint64(st.Size) {
			t.Errorf("qids %v valid %v attr %v, host mode %o size %d", qids, valid, attr, st.Mode, st.Size)
		}
	})
}

func testGetAttr(t *testing.T, e *env) {
	root := e.rootFile(t)
	mustHost(t, unix.Mkfifo(e.host("fifo"), 0o640))
	mustHost(t, unix.Mknod(e.host("sock"), unix.S_IFSOCK|0o755, 0))
	mustHost(t, os.Link(e.host("file.txt"), e.host("hard.txt")))
	mustHost(t, os.WriteFile(e.host("big"), make([]byte, 100000), 0o600))
	rows := []struct {
		name string
		typ  p9.QIDType
		root bool
	}{
		{"file.txt", p9.TypeRegular, false},  // regular file with two links
		{"big", p9.TypeRegular, false},       // size and blocks
		{"dir", p9.TypeDir, false},           // directory
		{"to-canary", p9.TypeSymlink, false}, // symlink: the link, not the canary
		{"fifo", p9.TypeAppendOnly, false},   // FIFO: stat'ed, never opened
		{"sock", p9.TypeAppendOnly, false},   // socket inode
		{"chardev", p9.TypeAppendOnly, true}, // device node: RDev must be st_rdev
	}
	for _, row := range rows {
		e.run(t, row.name, func(t *testing.T) {
			if row.root {
				needRoot(t)
				mustHost(t, unix.Mknod(e.host(row.name), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
			}
			f := walk(t, root, row.name)
			qid, valid, a, err := f.GetAttr(p9.AttrMaskAll)
			ok(t, err, "getattr")
			st := lstat(t, e.host(row.name))
			want := p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true,
				ATime: true, MTime: true, CTime: true, Size: true, Blocks: true}
			if !valid.Contains(want) {
				t.Errorf("valid %v lacks %v", valid, want)
			}
			if qid.Type != row.typ {
				t.Errorf("qid type %v, want %v", qid.Type, row.typ)
			}
			got := []uint64{uint64(a.Mode), uint64(a.UID), uint64(a.GID), uint64(a.NLink), uint64(a.RDev),
				a.Size, a.BlockSize, a.Blocks,
				a.ATimeSeconds, a.ATimeNanoSeconds, a.MTimeSeconds, a.MTimeNanoSeconds, a.CTimeSeconds, a.CTimeNanoSeconds}
			host := []uint64{uint64(st.Mode), uint64(st.Uid), uint64(st.Gid), uint64(st.Nlink), uint64(st.Rdev),
				uint64(st.Size), uint64(st.Blksize), uint64(st.Blocks),
				uint64(st.Atim.Sec), uint64(st.Atim.Nsec), uint64(st.Mtim.Sec), uint64(st.Mtim.Nsec), uint64(st.Ctim.Sec), uint64(st.Ctim.Nsec)}
			fields := []string{"mode", "uid", "gid", "nlink", "rdev", "size", "blksize", "blocks",
				"atime", "atime-ns", "mtime", "mtime-ns", "ctime", "ctime-ns"}
			for i := range got {
				if got[i] != host[i] {
					t.Errorf("%s: %d (%#o), host %d (%#o)", fields[i], got[i], got[i], host[i], host[i])
				}
			}
		})
	}
}

func testStatFS(t *testing.T, e *env) {
	fs, err := walk(t, e.rootFile(t), "dir").StatFS()
	ok(t, err, "statfs")
	var s unix.Statfs_t
	mustHost(t, unix.Statfs(e.root, &s))
	if fs.Type != uint32(s.Type) || fs.BlockSize != uint32(s.Bsize) || fs.Blocks != s.Blocks ||
		fs.Files != s.Files || fs.NameLength != uint32(s.Namelen) {
		t.Errorf("statfs %+v, host %+v", fs, s)
	}
}

func testReadlink(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Targets are returned exactly as stored, never resolved.
	for _, row := range []struct{ name, target string }{
		{"absolute", "/etc/shadow"},          // not resolved on the host
		{"relative", "dir/sub.txt"},          // returned as stored
		{"dotdot", "../../../../etc/passwd"}, // not resolved, not cleaned
		{"dangling", "no/such/thing"},        // no target needed
		{"odd-bytes", "a b\nc\td\x7f\xff"},   // bytes, not a clean string
		{"long", strings.Repeat("x/", 2000)}, // 4000 bytes, near PATH_MAX
	} {
		e.run(t, row.name, func(t *testing.T) {
			mustHost(t, os.Symlink(row.target, e.host("l-"+row.name)))
			got, err := walk(t, root, "l-"+row.name).Readlink()
			ok(t, err, "readlink")
			if got != row.target {
				t.Errorf("readlink %q, want %q", got, row.target)
			}
		})
	}
	// Readlink of a file that is not a symlink answers EINVAL.
	e.run(t, "not-a-symlink-einval", func(t *testing.T) {
		_, err := walk(t, root, "file.txt").Readlink()
		wantErrno(t, err, linux.EINVAL, "readlink file.txt")
	})
}
