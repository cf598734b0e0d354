package bench

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplice(t *testing.T) {
	fresh := "intro\n" + MarkerStart + "\nNEW\n" + MarkerEnd + "\n"
	tests := []struct {
		name  string
		old   string
		want  string
		ok    bool
		errIs error
	}{
		// The lead's prose around the markers survives a rerun.
		{"replaces between markers", "# Mine\n" + MarkerStart + "\nOLD\n" + MarkerEnd + "\nafter\n",
			"# Mine\n" + MarkerStart + "\nNEW\n" + MarkerEnd + "\nafter\n", true, nil},
		// A file without markers is not ours to splice: the caller rewrites it.
		{"no markers", "# Mine\n", "", false, nil},
		// An end before the start would eat text: refuse.
		{"end before start", MarkerEnd + "x" + MarkerStart, "", false, ErrMarkers},
		// A start without an end: refuse.
		{"start only", "a" + MarkerStart + "b", "", false, ErrMarkers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := splice(tc.old, fresh)
			if !errors.Is(err, tc.errIs) || (tc.errIs == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.errIs)
			}
			if ok != tc.ok || got != tc.want {
				t.Fatalf("got %q %v, want %q %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// UpdateBenchmarks keeps text outside the markers of an existing file.
func TestUpdateBenchmarksKeepsProse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	old := "# Lead's title\n\nLead's prose.\n\n" + MarkerStart + "\nstale\n" + MarkerEnd + "\n\nLead's footer.\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r := sampleResults()
	if err := UpdateBenchmarks(r, path, ""); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	for _, want := range []string{"# Lead's title", "Lead's prose.", "Lead's footer.", "| getattr on an open fid |"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "stale") {
		t.Errorf("stale results kept:\n%s", s)
	}
}

// sampleResults is a run with known figures.
func sampleResults() *Results {
	r := &Results{Params: QuickParams(), Targets: map[string]*TargetInfo{}}
	for _, tn := range AllTargets {
		r.Targets[tn] = &TargetInfo{Name: tn, Label: labels[tn], Available: true, IdleRSS: 8 << 10, BusyHWM: 70 << 10}
	}
	vals := map[string]map[string]float64{
		WGetattr: {TFsd: 9000, TEcho: 10000, TP9Localfs: 8000, TDiod: 7000, THost: 1e6},
		WCreate:  {TFsd: 3000, TDiod: 2000},
		WRead:    {TFsd: 400, THost: 1000},
	}
	for _, w := range workloads() {
		wr := &WorkloadResult{ID: w.id, Title: w.title, Unit: w.unit, Conns: 1, Results: map[string]*Measurement{}}
		for tn, v := range vals[w.id] {
			wr.Results[tn] = &Measurement{Median: v, Reps: []float64{v}}
		}
		r.Workloads = append(r.Workloads, wr)
	}
	r.Launcher = &LauncherResult{Starts: 3, StartMedian: 12, StopMedian: 25}
	r.evaluate()
	return r
}

func TestEvaluate(t *testing.T) {
	r := sampleResults()
	got := map[string]*GoalResult{}
	for _, g := range r.Goals {
		got[g.ID] = g
	}
	tests := []struct {
		goal, subject string
		value         float64
		met, present  bool
	}{
		// 9000/10000 = 0.90: exactly the floor target counts as met.
		{"getattr-floor", TFsd, 0.9, true, true},
		// 8000/10000 = 0.80 misses it.
		{"getattr-floor", TP9Localfs, 0.8, false, true},
		// 3000/2000 = 1.5 meets create >= 1.5 x diod.
		{"create-diod", TFsd, 1.5, true, true},
		// 400/1000 = 0.40 meets read >= 0.35 x host.
		{"read-host", TFsd, 0.4, true, true},
		// No walk figures: no value, not judged.
		{"walk-diod", TFsd, 0, false, false},
		// 12 ms start meets < 20 ms; the reference has no launcher.
		{GStart, TFsd, 12, true, true},
		{GStart, TP9Localfs, 0, false, false},
		// 25 ms stop misses.
		{GStop, TFsd, 25, false, true},
		// 8 MiB idle meets 10 MiB; 70 MiB busy misses 64 MiB.
		{GIdleRSS, TFsd, 8, true, true},
		{GBusyRSS, TFsd, 70, false, true},
	}
	for _, tc := range tests {
		g := got[tc.goal]
		v, ok := g.Values[tc.subject]
		if ok != tc.present || math.Abs(v-tc.value) > 1e-9 || g.Met[tc.subject] != tc.met {
			t.Errorf("%s/%s: value %v (present %v) met %v; want %v %v %v", tc.goal, tc.subject, v, ok, g.Met[tc.subject], tc.value, tc.present, tc.met)
		}
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},                     // nothing measured
		{[]float64{3}, 3},            // one repetition
		{[]float64{5, 1, 3}, 3},      // odd count: the middle, whatever the order
		{[]float64{4, 1, 3, 2}, 2.5}, // even count: mean of the middle two
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCountDirents(t *testing.T) {
	// Three records of reclen 24, 32, 24 (linux_dirent64 layout).
	var b []byte
	for _, rl := range []int{24, 32, 24} {
		rec := make([]byte, rl)
		rec[16] = byte(rl)
		b = append(b, rec...)
	}
	tests := []struct {
		name string
		in   []byte
		want int
	}{
		{"three records", b, 3},       // every record counted
		{"truncated last", b[:70], 2}, // a partial record is not an entry
		{"empty", nil, 0},             // end of directory
	}
	for _, tc := range tests {
		if got := countDirents(tc.in); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// With a baseline, the results section shows fsd's before and after.
func TestMarkdownBeforeAfter(t *testing.T) {
	before := sampleResults()
	after := sampleResults()
	for _, w := range after.Workloads {
		if m := w.Results[TFsd]; m != nil && w.ID == WGetattr {
			m.Median *= 2 // 9000 -> 18000: +100%
		}
	}
	after.evaluate()
	after.Baseline = before
	md := Markdown(after, "")
	for _, want := range []string{"### fsd before and after", "| getattr on an open fid | ops/s | 9,000 | 18,000 | +100% |"} {
		if !strings.Contains(md, want) {
			t.Errorf("missing %q in\n%s", want, md)
		}
	}
	if strings.Contains(Markdown(before, ""), "before and after") {
		t.Errorf("a run without a baseline shows a before/after section")
	}
}
