package sandbox

import (
	"os"
	"testing"
)

// BenchmarkFileOps measures what the sandbox costs the host side of a 9P
// request: one round of openat+fstat+pread(4 KiB)+close relative to the
// root fd, in a child process, before and after it applies each mode
// (the seccomp filter runs on every syscall; namespace mode changes the
// mounts lookups cross). ns/op is the confined round's thread CPU time;
// unconfined-ns/op the same process's round before Apply; cost-% the
// difference. Mode none is the control: its cost-% is the noise.
func BenchmarkFileOps(b *testing.B) {
	for _, mode := range []Mode{ModeNone, ModeChroot, ModeNamespace} {
		b.Run(string(mode), func(b *testing.B) {
			if mode != ModeNone {
				requireRoot(b)
			}
			root, _ := exports(b)
			if err := writeFile(root+"/hello", 4096); err != nil {
				b.Fatal(err)
			}
			c := startChild(b, "bench", childArgs{Mode: mode, Root: root, Iterations: b.N}, childOpts{newNS: mode != ModeNone})
			if c.report.Err != "" || c.report.Mode != mode {
				b.Fatalf("mode %q err %s\nstderr:\n%s", c.report.Mode, c.report.Err, c.stderr)
			}
			after := float64(c.report.Nanos) / float64(b.N)
			before := float64(c.report.NanosBefore) / float64(b.N)
			b.ReportMetric(after, "ns/op")
			b.ReportMetric(before, "unconfined-ns/op")
			b.ReportMetric(100*(after-before)/before, "cost-%")
		})
	}
}

func writeFile(path string, size int) error {
	return os.WriteFile(path, make([]byte, size), 0o644)
}
