package hostfs

import (
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// TestAllocations pins the heap allocations of the hot operations (issue
// 5): a walk or create is one allocation (the File, with its node, open
// state and QID inside), getattr and a failed lookup none, and a readdir
// call two whatever the number of entries. The paths without a sync.Pool
// are exact in every build; sync.Pool drops items at random under -race,
// so there the readdir row only checks that allocations do not grow with
// the entries.
func TestAllocations(t *testing.T) {
	tr := newTree(t)
	bigDir(t, tr.path("big"), 1000) // about 51 KB of entries: one chunk (ReaddirChunk)
	_, root := attach(t, tr.root)
	file := walkTo(t, root, "file.txt")
	dir := openDirFile(t, root, "big")
	owner := p9.UID(unix.Geteuid())
	group := p9.GID(unix.Getegid())
	const count = 256 << 10 // every entry of "big" in one call
	var entries int
	wire := make([]byte, 0, count)
	for _, row := range []struct {
		name string
		op   func() error
		// want is the exact count; when pooled is set, a -race build
		// checks only that the count stays below max.
		want   float64
		pooled bool
		max    float64
	}{
		// GetAttr of a pinned fd: one fstat into a stack buffer.
		{name: "getattr", op: func() error {
			_, _, _, err := file.GetAttr(p9.AttrMaskAll)
			return err
		}, want: 0},
		// Walk of one name and its clunk: the File alone (no node,
		// QID slice or name copy of its own).
		{name: "walk+clunk", op: func() error {
			_, f, err := root.Walk([]string{"dir"})
			if err != nil {
				return err
			}
			return f.Close()
		}, want: 1},
		// WalkGetAttr the same, the attributes coming from the walk's
		// own fstat.
		{name: "walkgetattr+clunk", op: func() error {
			_, f, _, _, err := root.WalkGetAttr([]string{"dir"})
			if err != nil {
				return err
			}
			return f.Close()
		}, want: 1},
		// A lookup of a name that does not exist (a guest's negative
		// stat): the errno costs nothing.
		{name: "walk-enoent", op: func() error {
			_, _, err := root.Walk([]string{"missing"})
			if err != linux.ENOENT {
				return err
			}
			return nil
		}, want: 0},
		// Walk, Open (a reopen through /proc/self/fd) and clunk: the
		// open state lives in the File.
		{name: "walk+open+clunk", op: func() error {
			_, f, err := root.Walk([]string{"file.txt"})
			if err != nil {
				return err
			}
			if _, _, err := f.Open(p9.ReadOnly); err != nil {
				return err
			}
			return f.Close()
		}, want: 1},
		// A clone (an empty walk) and its clunk: a File without a node
		// of its own.
		{name: "clone+clunk", op: func() error {
			_, f, err := root.Walk(nil)
			if err != nil {
				return err
			}
			return f.Close()
		}, want: 1},
		// Create as the daemon's own ids, clunk, unlink: the File only.
		{name: "create+clunk+unlink", op: func() error {
			f, _, _, err := root.Create("c", p9.ReadWrite, 0o644, owner, group)
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return root.UnlinkAt("c", 0)
		}, want: 1},
		// One Readdir call returning 1,002 entries, the whole
		// directory (so nothing is read ahead): the Dirents and the one
		// string of names.
		{name: "readdir", op: func() error {
			ents, err := dir.Readdir(0, count)
			entries = len(ents)
			return err
		}, want: 2, pooled: true, max: 64},
		// The same entries encoded into a reply buffer, as the server's
		// Treaddir asks: nothing at all.
		{name: "appendreaddir", op: func() error {
			var err error
			wire, err = dir.AppendReaddir(wire[:0], 0, count)
			return err
		}, want: 0, pooled: true, max: 64},
	} {
		t.Run(row.name, func(t *testing.T) {
			var opErr error
			got := testing.AllocsPerRun(50, func() {
				if err := row.op(); err != nil && opErr == nil {
					opErr = err
				}
			})
			must(t, opErr)
			switch {
			case row.pooled && raceEnabled:
				if got >= row.max {
					t.Errorf("%v allocations per op, want fewer than %v", got, row.max)
				}
			case got != row.want:
				t.Errorf("%v allocations per op, want %v", got, row.want)
			}
		})
	}
	if entries != 1002 {
		t.Errorf("readdir returned %d entries in one call, want 1002", entries)
	}
	if err := unix.Stat(filepath.Join(tr.root, "c"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Errorf("create+clunk+unlink left c behind: %v", err)
	}
}
