package bench

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// smokeParams keep the smoke run short; no test looks at a figure's size.
func smokeParams() Params {
	return Params{Reps: 2, Warmup: 5 * time.Millisecond, Duration: 20 * time.Millisecond,
		FileSize: 4 << 20, DirEntries: 300, LauncherStarts: 2, Msize: 1 << 20, Conns: 4,
		ServerCPU: NoPin, ClientCPU: NoPin}
}

// TestHarnessSmoke runs the whole harness against the host, the echo floor
// and p9's localfs server (this test binary in its server roles): every
// workload must produce a figure on every target that takes part, and the
// JSON, the Markdown and the SVG must be complete. It makes no claim about
// any figure's size.
func TestHarnessSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := New(WithQuick(), WithParams(smokeParams()), WithScratchDir(t.TempDir()),
		WithTargets(THost, TEcho, TP9Localfs), WithCommand("go test ./bench")).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{THost, TEcho, TP9Localfs} {
		if ti := res.Targets[tn]; ti == nil || !ti.Available {
			t.Fatalf("target %s did not run: %+v", tn, ti)
		}
	}
	if ti := res.Targets[TP9Localfs]; ti.Msize != 1<<20 || ti.IdleRSS <= 0 || ti.BusyHWM <= 0 {
		t.Errorf("p9-localfs: msize %d, idle RSS %d KiB, busy peak %d KiB", ti.Msize, ti.IdleRSS, ti.BusyHWM)
	}
	if _, ok := res.Targets[TFsd]; ok {
		t.Errorf("fsd ran though not selected")
	}
	for _, w := range res.Workloads {
		// The host does every workload; the floor only getattr.
		want := []string{THost}
		if w.ID == WGetattr || w.ID == WGetattr8 {
			want = append(want, TEcho, TP9Localfs)
		}
		if w.ID == WWalk || w.ID == WRead || w.ID == WWrite {
			want = append(want, TP9Localfs)
		}
		for _, tn := range want {
			m := w.Results[tn]
			if !m.ok() || len(m.Reps) != 2 {
				t.Errorf("%s on %s: %+v", w.ID, tn, m)
			}
		}
	}
	// localfs has no unlink: the workload must say so rather than fake it.
	for _, w := range res.Workloads {
		if w.ID == WCreate {
			if m := w.Results[TP9Localfs]; m == nil || !strings.Contains(m.Error, ErrUnsupported.Error()) {
				t.Errorf("create on p9-localfs: %+v, want %v", m, ErrUnsupported)
			}
		}
	}
	// Goals that have both ends measured are judged.
	var judged int
	for _, g := range res.Goals {
		if _, ok := g.Values[TP9Localfs]; ok {
			judged++
		}
	}
	if judged < 5 { // getattr x2, read, write, idle RSS, busy RSS
		t.Errorf("only %d goals judged for p9-localfs: %+v", judged, res.Goals)
	}

	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "results.json")
	if err := WriteJSON(res, jsonPath); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if v1, _ := res.value(WGetattr, TEcho); v1 == 0 {
		t.Fatal("no floor figure")
	} else if v2, _ := back.value(WGetattr, TEcho); v2 != v1 {
		t.Errorf("JSON round trip: floor %v became %v", v1, v2)
	}

	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := UpdateBenchmarks(res, md, "docs/bench.svg"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{MarkerStart, MarkerEnd, "go test ./bench", "| getattr on an open fid | ops/s |", "docs/bench.svg", "p9-localfs (reference)"} {
		if !strings.Contains(string(b), s) {
			t.Errorf("BENCHMARKS.md lacks %q", s)
		}
	}

	svg := SVG(res)
	if err := wellFormed(svg); err != nil {
		t.Fatalf("SVG: %v\n%s", err, svg)
	}
	if n := strings.Count(svg, "<rect x="); n < judged {
		t.Errorf("SVG has %d bars, want at least %d", n, judged)
	}
}

func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		if _, err := d.Token(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TestHarnessDiod runs the 9P workloads against diod, which accepts only
// plain 9P2000.L, a real uid and aname = export path: it proves the client
// dialect and the Tremove fallback against the strict C server.
func TestHarnessDiod(t *testing.T) {
	if _, err := exec.LookPath("diod"); err != nil {
		if _, err := os.Stat("/usr/sbin/diod"); err != nil {
			t.Skip("diod is not installed (apt-get install diod)")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := New(WithParams(smokeParams()), WithScratchDir(t.TempDir()), WithTargets(TDiod)).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ti := res.Targets[TDiod]
	if !ti.Available {
		t.Fatalf("diod did not run: %s", ti.Error)
	}
	if ti.Msize != 64<<10 {
		t.Errorf("diod granted msize %d, want 64 KiB (what 1.0.24 grants)", ti.Msize)
	}
	for _, w := range res.Workloads {
		if m := w.Results[TDiod]; w.ID != WGetattr8 && w.ID != WGetattr && !m.ok() {
			t.Errorf("%s on diod: %+v", w.ID, m)
		} else if m != nil && m.Error != "" {
			t.Errorf("%s on diod: %s", w.ID, m.Error)
		}
		if w.ID == WCreate {
			if m := w.Results[TDiod]; m == nil || !strings.Contains(m.Note, "Tremove") {
				t.Errorf("create on diod: note %+v, want the Tremove fallback", m)
			}
		}
	}
}

// TestStartPinned checks that a child started pinned runs on that CPU only
// and that the caller's own affinity is untouched.
func TestStartPinned(t *testing.T) {
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	if before.Count() < 2 {
		t.Skip("needs 2 CPUs")
	}
	for _, cpu := range []int{0, 1} {
		cmd := exec.Command("sleep", "30")
		if err := startPinned(cmd, cpu); err != nil {
			t.Fatal(err)
		}
		got, err := cpusAllowed(cmd.Process.Pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"0", "1"}[cpu]; got != want {
			t.Errorf("child pinned to %d runs on %q", cpu, got)
		}
	}
	var after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("caller's affinity changed from %v to %v", before, after)
	}
}

// TestPinProcess runs this test binary with PinProcess(1): after its
// re-exec every thread of the process, not just the caller's, must be
// bound to CPU 1.
func TestPinProcess(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	if set.Count() < 2 || !set.IsSet(1) {
		t.Skip("needs CPUs 0 and 1")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envTestPin+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) < 2 { // the Go runtime always runs several threads
		t.Fatalf("threads: %q", lines)
	}
	for _, l := range lines {
		if l != "1" {
			t.Fatalf("a thread runs on %q after PinProcess(1); all: %q", l, lines)
		}
	}
}
