package conformance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("escape", testEscape)
	register("escape-race", testEscapeRace)
}

// uniqueOutside is a name that must never appear outside the export.
const uniqueOutside = "fsd-conformance-escaped"

// noEscapeOutside fails the test if anything named uniqueOutside was
// created beside the export or at the host root, and removes it so that
// one escape does not fail every later run.
func (e *env) noEscapeOutside(t *testing.T) {
	t.Helper()
	for _, dir := range []string{"/", e.base, e.canaryDir, filepath.Dir(e.base)} {
		p := filepath.Join(dir, uniqueOutside)
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ESCAPE: %s was created (%v)", p, err)
			os.RemoveAll(p)
		}
	}
}

// tryAll runs attempts that must all fail.
func tryAll(t *testing.T, attempts map[string]error) {
	t.Helper()
	for what, err := range attempts {
		wantFail(t, err, "%s", what)
	}
}

func testEscape(t *testing.T, e *env) {
	// Each row tries to reach outside the export; afterwards the canaries
	// (content, times, nlink, xattrs, listing) must be untouched and
	// nothing may have been created outside.
	rows := []struct {
		name string
		try  func(t *testing.T, root p9.File)
	}{
		// Walking through a symlink to "/", or up with "..", fails.
		{"walk-through-symlinks", func(t *testing.T, root p9.File) {
			tryAll(t, map[string]error{
				"walk to-root/etc/passwd":   walkErr(root, "to-root", "etc", "passwd"),
				"walk to-dotdot/canary.txt": walkErr(root, "to-dotdot", "canary.txt"),
				"walk to-canary-dir/inner":  walkErr(root, "to-canary-dir", "inner"),
				"walk to-canary/x":          walkErr(root, "to-canary", "x"),
				"walk to-canary-rel/x":      walkErr(root, "to-canary-rel", "x"),
			})
		}},
		// ".." components are refused wherever they appear.
		{"dotdot-walks", func(t *testing.T, root p9.File) {
			tryAll(t, map[string]error{
				"walk ..":                   walkErr(root, ".."),
				"walk ../canary.txt":        walkErr(root, "..", "canary.txt"),
				"walk dir/..":               walkErr(root, "dir", ".."),
				"walk dir/../../canary.txt": walkErr(root, "dir", "..", "..", "canary.txt"),
			})
		}},
		// Names containing "/" are refused by every operation.
		{"slash-names", func(t *testing.T, root p9.File) {
			_, _, createErr := create(root, "../"+uniqueOutside, p9.ReadWrite, 0o644)
			_, _, createErr2 := create(root, "dir/../../"+uniqueOutside, p9.ReadWrite, 0o644)
			_, mkdirErr := root.Mkdir("../"+uniqueOutside, 0o755, p9.NoUID, p9.NoGID)
			_, symErr := root.Symlink("x", "../"+uniqueOutside, p9.NoUID, p9.NoGID)
			_, nodErr := root.Mknod("../"+uniqueOutside, p9.ModeRegular|0o644, 0, 0, p9.NoUID, p9.NoGID)
			tryAll(t, map[string]error{
				"create ../x":           createErr,
				"create dir/../../x":    createErr2,
				"mkdir ../x":            mkdirErr,
				"symlink ../x":          symErr,
				"mknod ../x":            nodErr,
				"link ../x":             root.Link(walk(t, root, "file.txt"), "../"+uniqueOutside),
				"rename to ../x":        root.RenameAt("file.txt", root, "../"+uniqueOutside),
				"rename ../canary.txt":  root.RenameAt("../canary.txt", root, "stolen"),
				"unlink ../canary.txt":  root.UnlinkAt("../canary.txt", 0),
				"unlink ../canary-dir":  root.UnlinkAt("../canary-dir", atRemoveDir),
				"walk absolute canary":  walkErr(root, e.canary),
				"walk dir/sub.txt as 1": walkErr(root, "dir/sub.txt"),
			})
		}},
		// A symlink to "/" cannot be used as a directory to create in.
		{"create-through-symlink-to-root", func(t *testing.T, root p9.File) {
			s := walk(t, root, "to-root")
			_, _, createErr := create(s, uniqueOutside, p9.ReadWrite, 0o644)
			_, mkdirErr := s.Mkdir(uniqueOutside, 0o755, p9.NoUID, p9.NoGID)
			_, symErr := s.Symlink("x", uniqueOutside, p9.NoUID, p9.NoGID)
			_, nodErr := s.Mknod(uniqueOutside, p9.ModeRegular|0o644, 0, 0, p9.NoUID, p9.NoGID)
			_, _, openErr := s.Open(p9.ReadOnly)
			tryAll(t, map[string]error{
				"create":      createErr,
				"mkdir":       mkdirErr,
				"symlink":     symErr,
				"mknod":       nodErr,
				"link":        s.Link(walk(t, root, "file.txt"), uniqueOutside),
				"open as dir": openErr,
			})
		}},
		// The same through a symlink to the canary directory.
		{"create-through-symlink-to-canary-dir", func(t *testing.T, root p9.File) {
			s := walk(t, root, "to-canary-dir")
			_, _, createErr := create(s, uniqueOutside, p9.ReadWrite, 0o644)
			_, mkdirErr := s.Mkdir(uniqueOutside, 0o755, p9.NoUID, p9.NoGID)
			tryAll(t, map[string]error{
				"create":       createErr,
				"mkdir":        mkdirErr,
				"unlink inner": s.UnlinkAt("inner", 0),
				"rename inner": s.RenameAt("inner", root, "stolen"),
				"rename into":  root.RenameAt("file.txt", s, uniqueOutside),
				"link into":    s.Link(walk(t, root, "file.txt"), uniqueOutside),
				"readdir":      readdirErr(s),
			})
		}},
		// A symlink to a file outside is never opened, truncated or
		// chmod'ed through (times and owner apply to the link itself).
		{"symlink-to-canary-file", func(t *testing.T, root p9.File) {
			for _, name := range []string{"to-canary", "to-canary-rel"} {
				for _, mode := range []p9.OpenFlags{p9.ReadOnly, p9.WriteOnly, p9.ReadWrite, p9.WriteOnly | dotlTrunc} {
					_, _, err := walk(t, root, name).Open(mode)
					wantFail(t, err, "open %s mode %#o", name, mode)
				}
				s := walk(t, root, name)
				wantFail(t, s.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0}), "truncate %s", name)
				wantFail(t, s.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}), "chmod %s", name)
				s.SetAttr(p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{})
				if isRoot() {
					s.SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 4242, GID: 4242})
				}
			}
		}},
		// Xattrs are never set or read through a symlink.
		{"symlink-to-canary-xattr", func(t *testing.T, root p9.File) {
			r := e.raw(t, "", noFID)
			_, err := r.walk(0, 1, "to-canary")
			ok(t, err, "walk")
			wantFail(t, r.setXattr(1, 2, "user.escaped", []byte("x"), 0), "setxattr through to-canary")
			wantFail(t, r.removeXattr(1, 3, "user.escaped"), "removexattr through to-canary")
		}},
		// A hard link to a symlink links the link, never the canary.
		{"hardlink-to-symlink", func(t *testing.T, root p9.File) {
			for i, name := range []string{"to-canary", "to-canary-rel", "to-canary-dir", "to-root"} {
				hl := fmt.Sprintf("hl%d", i)
				if err := root.Link(walk(t, root, name), hl); err != nil {
					continue
				}
				if st := lstat(t, e.host(hl)); st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Ino != lstat(t, e.host(name)).Ino {
					t.Errorf("hard link to %s is mode %o, not the link", name, st.Mode)
				}
			}
		}},
		// A directory fid keeps naming its directory after the host
		// replaces it with a symlink to the canary directory.
		{"dir-swapped-for-symlink-after-walk", func(t *testing.T, root p9.File) {
			d := walk(t, root, "dir")
			mustHost(t, os.Rename(e.host("dir"), e.host("dir-moved")))
			mustHost(t, os.Symlink(e.canaryDir, e.host("dir")))
			f, _, err := create(d, "created.txt", p9.ReadWrite, 0o644)
			ok(t, err, "create through the pinned fid")
			f.Close()
			_, err = d.Mkdir("made", 0o755, p9.NoUID, p9.NoGID)
			ok(t, err, "mkdir through the pinned fid")
			lstat(t, e.host("dir-moved/created.txt"))
			lstat(t, e.host("dir-moved/made"))
			in := walk(t, d, "sub.txt")
			_, _, err = in.Open(p9.ReadOnly)
			ok(t, err, "open sub.txt")
			if got, _ := readAll(in); string(got) != "sub\n" {
				t.Errorf("read %q", got)
			}
			_, _, err = create(walk(t, root, "dir"), uniqueOutside, p9.ReadWrite, 0o644)
			wantFail(t, err, "create through the new symlink")
		}},
	}
	for _, row := range rows {
		e.run(t, row.name, func(t *testing.T) {
			row.try(t, e.rootFile(t))
			e.checkCanaries(t)
			e.noEscapeOutside(t)
		})
	}
}

// walkErr walks and closes, returning the error (a partial walk is one).
func walkErr(root p9.File, names ...string) error {
	_, f, err := walkFull(root, names)
	if err == nil {
		f.Close()
	}
	return err
}

// readdirErr opens dir and reads it, returning the first error.
func readdirErr(dir p9.File) error {
	_, d, err := dir.Walk(nil)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		return err
	}
	_, err = d.Readdir(0, 4096)
	return err
}

func testEscapeRace(t *testing.T, e *env) {
	// A host thread swaps a directory and a symlink to the canary
	// directory with renameat2(RENAME_EXCHANGE) as fast as it can, while
	// the client walks, creates, makes directories and reads through
	// both names. Everything must land in the export's directory and the
	// canary directory must never be read or written.
	e.run(t, "rename-exchange", func(t *testing.T) {
		swap, link := e.host("swap"), e.host("swaplink")
		mustHost(t, os.Mkdir(swap, 0o755))
		mustHost(t, os.WriteFile(filepath.Join(swap, "inner"), []byte("EXPORT\n"), 0o644))
		mustHost(t, os.Symlink(e.canaryDir, link))
		if err := unix.Renameat2(unix.AT_FDCWD, swap, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
			t.Skipf("host has no RENAME_EXCHANGE here: %v", err)
		}
		var (
			stop  = make(chan struct{})
			wg    sync.WaitGroup
			swaps atomic.Int64
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if unix.Renameat2(unix.AT_FDCWD, swap, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE) == nil {
					swaps.Add(1)
				}
			}
		}()
		root := e.rootFile(t)
		created := 0
		readInner := func(f p9.File) {
			defer f.Close()
			if _, _, err := f.Open(p9.ReadOnly); err != nil {
				return
			}
			if got, _ := readAll(f); string(got) == canaryInnerContent {
				t.Errorf("ESCAPE: read the canary through a swapped name")
			}
		}
		for i := range 300 {
			for _, name := range []string{"swap", "swaplink"} {
				if _, d, err := walkFull(root, []string{name}); err == nil {
					if f, _, err := create(d, fmt.Sprintf("c-%s-%d", name, i), p9.ReadWrite, 0o644); err == nil {
						created++
						f.Close()
					}
					if _, err := d.Mkdir(fmt.Sprintf("m-%s-%d", name, i), 0o755, p9.NoUID, p9.NoGID); err == nil {
						created++
					}
					if _, in, err := walkFull(d, []string{"inner"}); err == nil {
						readInner(in)
					}
					d.Close()
				}
				if _, in, err := walkFull(root, []string{name, "inner"}); err == nil {
					readInner(in)
				}
			}
		}
		close(stop)
		wg.Wait()
		// The real directory is whichever name is a directory now.
		real := swap
		if st := lstat(t, swap); st.Mode&unix.S_IFMT != unix.S_IFDIR {
			real = link
		}
		ents, err := os.ReadDir(real)
		mustHost(t, err)
		if len(ents) != created+1 {
			t.Errorf("export directory holds %d entries, want %d created + inner", len(ents), created)
		}
		t.Logf("%d swaps, %d creations", swaps.Load(), created)
		e.checkCanaries(t)
		e.noEscapeOutside(t)
		if _, err := os.Lstat(filepath.Join(e.canaryDir, "c-swap-0")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ESCAPE: created in the canary directory")
		}
	})
}
