package hostfs

import (
	"testing"

	"github.com/hugelgupf/p9/p9"
)

// TestFDsPerFid holds the host fd cost the package comment documents: one
// pinned fd per walked fid, none for a clone, one more while open (none
// for a created file, whose O_CREAT fd is both), and one more for a fid
// walked through several names (the intermediate directory it keeps for
// Remove). Every row's fds are released when its Files are closed.
func TestFDsPerFid(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	for _, row := range []struct {
		name string
		// make returns the Files it made; want is the fds they hold.
		make func(t *testing.T) []p9.File
		want int
	}{
		// A one-name walk (what Linux's v9fs sends): its own fd; its
		// parent is the root's node, shared.
		{"walk-one-name", func(t *testing.T) []p9.File {
			_, f, err := root.Walk([]string{"dir"})
			must(t, err)
			return []p9.File{f}
		}, 1},
		// A two-name walk: its own fd and the intermediate directory's.
		{"walk-two-names", func(t *testing.T) []p9.File {
			_, f, err := root.Walk([]string{"dir", "sub.txt"})
			must(t, err)
			return []p9.File{f}
		}, 2},
		// A clone shares its source's fd.
		{"clone", func(t *testing.T) []p9.File {
			_, f, err := root.Walk(nil)
			must(t, err)
			return []p9.File{f}
		}, 0},
		// An opened clone: the fd Open made.
		{"clone-opened", func(t *testing.T) []p9.File {
			_, f, err := root.Walk(nil)
			must(t, err)
			_, _, err = f.Open(p9.ReadOnly)
			must(t, err)
			return []p9.File{f}
		}, 1},
		// A walked and opened file: the pinned fd and the open one.
		{"walk-and-open", func(t *testing.T) []p9.File {
			_, f, err := root.Walk([]string{"file.txt"})
			must(t, err)
			_, _, err = f.Open(p9.ReadOnly)
			must(t, err)
			return []p9.File{f}
		}, 2},
		// A created file: the O_CREAT fd pins it and serves its I/O.
		{"create", func(t *testing.T) []p9.File {
			f, _, _, err := root.Create("fds-new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
			must(t, err)
			must(t, root.UnlinkAt("fds-new", 0))
			return []p9.File{f}
		}, 1},
	} {
		t.Run(row.name, func(t *testing.T) {
			before := countFDs(t)
			files := row.make(t)
			if got := countFDs(t) - before; got != row.want {
				t.Errorf("%d host fds held, want %d", got, row.want)
			}
			for _, f := range files {
				must(t, f.Close())
			}
			if after := countFDs(t); after != before {
				t.Errorf("fds: %d before, %d after closing", before, after)
			}
		})
	}
}
