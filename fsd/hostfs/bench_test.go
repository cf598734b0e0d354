package hostfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

// File-level costs of the operations the server benchmarks measure end to
// end (getattr, walk+clunk, create+unlink, readdir of 10,000 entries,
// 1 MiB reads and writes), without any protocol in the way.

func benchRoot(b *testing.B) (string, p9.File) {
	b.Helper()
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "f"), make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	fs, err := New(dir)
	if err != nil {
		b.Fatal(err)
	}
	root, err := fs.Attach()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		root.Close()
		fs.Close()
	})
	return dir, root
}

func BenchmarkGetAttr(b *testing.B) {
	_, root := benchRoot(b)
	_, f, err := root.Walk([]string{"d", "f"})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := f.GetAttr(p9.AttrMaskAll); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWalkGetAttrClose(b *testing.B) {
	_, root := benchRoot(b)
	names := []string{"d"}
	b.ReportAllocs()
	for b.Loop() {
		_, f, _, _, err := root.WalkGetAttr(names)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkCreateUnlink(b *testing.B) {
	_, root := benchRoot(b)
	b.ReportAllocs()
	for b.Loop() {
		f, _, _, err := root.Create("c", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := root.UnlinkAt("c", 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaddir10000(b *testing.B) {
	dir, root := benchRoot(b)
	bigDir(b, filepath.Join(dir, "big"), 10000)
	b.ReportAllocs()
	for b.Loop() {
		_, d, err := root.Walk([]string{"big"})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := d.Open(p9.ReadOnly); err != nil {
			b.Fatal(err)
		}
		var off uint64
		n := 0
		for {
			ents, err := d.Readdir(off, 64<<10)
			if err != nil {
				b.Fatal(err)
			}
			if len(ents) == 0 {
				break
			}
			n += len(ents)
			off = ents[len(ents)-1].Offset
		}
		d.Close()
		if n != 10002 {
			b.Fatal(fmt.Sprintf("%d entries", n))
		}
	}
}

func benchIO(b *testing.B, write bool) {
	_, root := benchRoot(b)
	_, f, err := root.Walk([]string{"d", "f"})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadWrite); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if write {
			_, err = f.WriteAt(buf, 0)
		} else {
			_, err = f.ReadAt(buf, 0)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAt1MiB(b *testing.B)  { benchIO(b, false) }
func BenchmarkWriteAt1MiB(b *testing.B) { benchIO(b, true) }
