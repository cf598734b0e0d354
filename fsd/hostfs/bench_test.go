package hostfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
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

// BenchmarkWalkClose is walk+clunk of one name through Walk, the call
// fsd's server makes.
func BenchmarkWalkClose(b *testing.B) {
	_, root := benchRoot(b)
	names := []string{"d"}
	b.ReportAllocs()
	cpu := startCPU(b)
	n := 0
	for b.Loop() {
		_, f, err := root.Walk(names)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		n++
	}
	cpu.report(b, n, "op")
}

func BenchmarkWalkGetAttrClose(b *testing.B) {
	_, root := benchRoot(b)
	names := []string{"d"}
	b.ReportAllocs()
	cpu := startCPU(b)
	n := 0
	for b.Loop() {
		_, f, _, _, err := root.WalkGetAttr(names)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		n++
	}
	cpu.report(b, n, "op")
}

// BenchmarkCreateUnlink is the harness's create+close+unlink as a Linux
// guest sends it: clone the directory fid, create on the clone (as the
// daemon's own ids), clunk, unlink.
func BenchmarkCreateUnlink(b *testing.B) {
	_, root := benchRoot(b)
	uid, gid := p9.UID(unix.Geteuid()), p9.GID(unix.Getegid())
	b.ReportAllocs()
	cpu := startCPU(b)
	n := 0
	for b.Loop() {
		_, dir, err := root.Walk(nil)
		if err != nil {
			b.Fatal(err)
		}
		f, _, _, err := dir.Create("c", p9.ReadWrite, 0o644, uid, gid)
		if err != nil {
			b.Fatal(err)
		}
		dir.Close()
		f.Close()
		if err := root.UnlinkAt("c", 0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	cpu.report(b, n, "op")
}

// BenchmarkReaddir10000 reads a 10,000-entry directory to its end, with
// the budget of a 64 KiB and of a 1 MiB msize (the harness's). Beside the
// time it reports the process's user and system CPU time per entry
// (getrusage: garbage collection included), which the other load on a
// shared machine disturbs less than the wall clock; the system time is
// getdents64's, hostfs's share is the user time.
func BenchmarkReaddir10000(b *testing.B) {
	dir, root := benchRoot(b)
	bigDir(b, filepath.Join(dir, "big"), 10000)
	for _, count := range []uint32{64<<10 - 24, 1<<20 - 24} {
		b.Run(fmt.Sprintf("count=%dKiB", (count+24)>>10), func(b *testing.B) {
			b.ReportAllocs()
			cpu := startCPU(b)
			entries := 0
			for b.Loop() {
				entries += readDirOnce(b, root, count)
			}
			cpu.report(b, entries, "entry")
		})
	}
}

// readDirOnce walks to "big", opens it, reads it to its end and clunks
// it, as a guest's ls would; it returns the number of entries.
func readDirOnce(b *testing.B, root p9.File, count uint32) int {
	_, d, err := root.Walk([]string{"big"})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		b.Fatal(err)
	}
	var off uint64
	n := 0
	for {
		ents, err := d.Readdir(off, count)
		if err != nil {
			b.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		n += len(ents)
		off = ents[len(ents)-1].Offset
	}
	if n != 10002 {
		b.Fatal(fmt.Sprintf("%d entries", n))
	}
	return n
}

// cpuClock is the process's CPU time at the start of a benchmark.
type cpuClock struct{ user, sys time.Duration }

func rusageNow(b *testing.B) cpuClock {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return cpuClock{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

func startCPU(b *testing.B) cpuClock { return rusageNow(b) }

// report adds user-ns/UNIT and sys-ns/UNIT for n units of work.
func (c cpuClock) report(b *testing.B, n int, unit string) {
	if n == 0 {
		return
	}
	now := rusageNow(b)
	b.ReportMetric(float64(now.user-c.user)/float64(n), "user-ns/"+unit)
	b.ReportMetric(float64(now.sys-c.sys)/float64(n), "sys-ns/"+unit)
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
