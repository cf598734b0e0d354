package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// variants are the kernel-feature paths every unit test runs through: the
// modern system calls, and every fallback forced at once.
var variants = []struct {
	name string
	opts []Option
}{
	{"modern", nil},
	{"fallbacks", []Option{withoutOpenat2(), withoutXattrat(), withoutEmptyPath()}},
}

// forVariants runs fn once per variant.
func forVariants(t *testing.T, fn func(t *testing.T, opts []Option)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) { fn(t, v.opts) })
	}
}

// tree is a test export beside an outside directory:
//
//	<tmp>/export/{file.txt, dir/sub.txt, link-out -> ../outside, link-file -> ../outside/secret}
//	<tmp>/outside/secret
type tree struct {
	base, root, outside string
}

func newTree(t *testing.T) tree {
	t.Helper()
	base := t.TempDir()
	tr := tree{base: base, root: filepath.Join(base, "export"), outside: filepath.Join(base, "outside")}
	must(t, os.Mkdir(tr.root, 0o755))
	must(t, os.Mkdir(tr.outside, 0o755))
	must(t, os.WriteFile(filepath.Join(tr.outside, "secret"), []byte("secret"), 0o600))
	must(t, os.WriteFile(tr.path("file.txt"), []byte("hello"), 0o644))
	must(t, os.Mkdir(tr.path("dir"), 0o755))
	must(t, os.WriteFile(tr.path("dir/sub.txt"), []byte("sub"), 0o644))
	must(t, os.Symlink("../outside", tr.path("link-out")))
	must(t, os.Symlink("../outside/secret", tr.path("link-file")))
	return tr
}

func (tr tree) path(rel string) string { return filepath.Join(tr.root, rel) }

// attach makes an FS over tr.root and returns its root File; both are
// closed at the end of the test.
func attach(t *testing.T, root string, opts ...Option) (*FS, *file) {
	t.Helper()
	fs, err := New(root, opts...)
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	f, err := fs.Attach()
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() {
		f.Close()
		fs.Close()
	})
	return fs, f.(*file)
}

// walkTo walks names and fails the test on error; the File is closed at
// the end of the test.
func walkTo(t *testing.T, from p9.File, names ...string) *file {
	t.Helper()
	_, f, err := from.Walk(names)
	if err != nil {
		t.Fatalf("walk %v: %v", names, err)
	}
	t.Cleanup(func() { f.Close() })
	return f.(*file)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err error, want linux.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
	var le linux.Errno
	if err != nil && !errors.As(err, &le) {
		t.Errorf("%s: error %T is not a linux.Errno", what, err)
	}
}

func lstatT(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	return st
}

// countFDs counts the process's open fds.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents) - 1 // the directory being read
}
