package conformance

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("readdir", testReaddir)
	register("readdir-large", testReaddirLarge)
}

// openDir walks to rel ("" for root) and opens it.
func openDir(t *testing.T, root p9.File, rel ...string) p9.File {
	t.Helper()
	_, d, err := walkFull(root, rel)
	ok(t, err, "walk %v", rel)
	_, _, err = d.Open(p9.ReadOnly)
	ok(t, err, "open %v", rel)
	return d
}

// readdirEntries reads a whole directory in count-byte requests.
func readdirEntries(t *testing.T, d p9.File, off uint64, count uint32) []p9.Dirent {
	t.Helper()
	var all []p9.Dirent
	for range 1 << 20 {
		ents, err := d.Readdir(off, count)
		ok(t, err, "readdir at %d", off)
		if len(ents) == 0 {
			return all
		}
		used := 0
		for _, de := range ents {
			used += 24 + len(de.Name)
		}
		if used > int(count) {
			t.Fatalf("readdir(%d, %d): %d bytes of entries", off, count, used)
		}
		all = append(all, ents...)
		off = ents[len(ents)-1].Offset
	}
	t.Fatal("readdir never ended")
	return nil
}

// names returns the entry names, sorted.
func names(ents []p9.Dirent) []string {
	out := make([]string, len(ents))
	for i, de := range ents {
		out[i] = de.Name
	}
	sort.Strings(out)
	return out
}

// hostNames lists a host directory like readdir would (with . and ..).
func hostNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	mustHost(t, err)
	out := []string{".", ".."}
	for _, de := range ents {
		out = append(out, de.Name())
	}
	sort.Strings(out)
	return out
}

// checkOnce fails the test unless got holds every name of want exactly once.
func checkOnce(t *testing.T, got []p9.Dirent, want []string) {
	t.Helper()
	seen := make(map[string]int, len(got))
	for _, de := range got {
		seen[de.Name]++
	}
	for _, n := range want {
		if seen[n] != 1 {
			t.Errorf("entry %q seen %d times", n, seen[n])
		}
		delete(seen, n)
	}
	for n, c := range seen {
		t.Errorf("unexpected entry %q (%d times)", n, c)
	}
}

func testReaddir(t *testing.T, e *env) {
	root := e.rootFile(t)
	mustHost(t, unix.Mkfifo(e.host("dir/fifo"), 0o644))
	mustHost(t, unix.Mknod(e.host("dir/sock"), unix.S_IFSOCK|0o644, 0))
	mustHost(t, os.Symlink("sub.txt", e.host("dir/link")))
	mustHost(t, os.Mkdir(e.host("dir/subdir"), 0o755))
	// Every entry once, "." and ".." included, with the host's d_type.
	e.run(t, "entries-and-types", func(t *testing.T) {
		got := readdirEntries(t, openDir(t, root, "dir"), 0, 8192)
		checkOnce(t, got, hostNames(t, e.host("dir")))
		want := map[string]uint8{".": unix.DT_DIR, "..": unix.DT_DIR, "sub.txt": unix.DT_REG,
			"fifo": unix.DT_FIFO, "sock": unix.DT_SOCK, "link": unix.DT_LNK, "subdir": unix.DT_DIR}
		for _, de := range got {
			if uint8(de.Type) != want[de.Name] {
				t.Errorf("%s: type %d, want d_type %d", de.Name, de.Type, want[de.Name])
			}
		}
	})
	// The offset of the last entry resumes at the end: nothing more.
	e.run(t, "end-is-empty", func(t *testing.T) {
		d := openDir(t, root, "dir")
		got := readdirEntries(t, d, 0, 8192)
		ents, err := d.Readdir(got[len(got)-1].Offset, 8192)
		ok(t, err, "readdir at end")
		if len(ents) != 0 {
			t.Errorf("%d entries past the end", len(ents))
		}
	})
	// Each reply fits its byte budget (checked in readdirEntries), down to
	// one entry per reply, and no entry is lost or repeated.
	for _, count := range []uint32{24 + 8, 64, 100, 300} {
		e.run(t, fmt.Sprintf("budget-%d", count), func(t *testing.T) {
			checkOnce(t, readdirEntries(t, openDir(t, root, "dir"), 0, count), hostNames(t, e.host("dir")))
		})
	}
	// A budget too small for any entry is refused.
	e.run(t, "count-too-small-einval", func(t *testing.T) {
		_, err := openDir(t, root, "dir").Readdir(0, 10)
		wantErrno(t, err, linux.EINVAL, "readdir count 10")
	})
	// Readdir needs an open directory.
	e.run(t, "not-open-fails", func(t *testing.T) {
		_, err := walk(t, root, "dir").Readdir(0, 8192)
		wantFail(t, err, "readdir of an unopened fid")
	})
	// Names in the root export never show what lies outside it.
	e.run(t, "root", func(t *testing.T) {
		got := readdirEntries(t, openDir(t, root), 0, 8192)
		checkOnce(t, got, hostNames(t, e.root))
	})
}

func testReaddirLarge(t *testing.T, e *env) {
	const n = 10000
	mustHost(t, os.Mkdir(e.host("big"), 0o755))
	for i := range n {
		// Names of varying length, so entries straddle replies.
		name := fmt.Sprintf("f%05d%s", i, strings.Repeat("x", i%37))
		mustHost(t, os.WriteFile(e.host("big/"+name), nil, 0o644))
	}
	want := hostNames(t, e.host("big"))
	if len(want) != n+2 {
		t.Fatalf("host has %d entries", len(want))
	}
	root := e.rootFile(t)
	// 10,000 entries read in small chunks: every entry exactly once.
	var all []p9.Dirent
	e.run(t, "small-chunks", func(t *testing.T) {
		all = readdirEntries(t, openDir(t, root, "big"), 0, 512)
		checkOnce(t, all, want)
	})
	// Resuming from any returned offset returns exactly the rest, on the
	// same open fid (seek back) and on a fresh one.
	e.run(t, "resume-from-offset", func(t *testing.T) {
		if len(all) != n+2 {
			t.Skip("small-chunks failed")
		}
		d := openDir(t, root, "big")
		readdirEntries(t, d, 0, 4096)
		for _, k := range []int{0, 1, 777, 5000, n} {
			rest := readdirEntries(t, d, all[k].Offset, 2000)
			checkOnce(t, rest, names(all[k+1:]))
			fresh := readdirEntries(t, openDir(t, root, "big"), all[k].Offset, 3000)
			checkOnce(t, fresh, names(all[k+1:]))
		}
	})
	// Offset 0 rewinds.
	e.run(t, "rewind", func(t *testing.T) {
		d := openDir(t, root, "big")
		first, err := d.Readdir(0, 300)
		ok(t, err, "readdir")
		readdirEntries(t, d, first[len(first)-1].Offset, 8192)
		again, err := d.Readdir(0, 300)
		ok(t, err, "readdir after rewind")
		if len(again) != len(first) || again[0] != first[0] {
			t.Errorf("rewind: %v then %v", first, again)
		}
	})
}
