package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/pkg/errors"
)

// Target names (results.json keys).
const (
	TFsd = "fsd"
	// TFsdNoPoll is fsd with busy polling off (busy_poll = "0s"): what
	// polling buys, and what fsd does where CPU time matters more than
	// latency.
	TFsdNoPoll = "fsd-nopoll"
	TDiod      = "diod"
	TP9Localfs = "p9-localfs"
	THost      = "host"
	TEcho      = "echo"
	// TFsdProf is fsd's server loop and attach point in one process under
	// the Go profiler (bench/cmd/fsdprof): selected by name only, for
	// profiling (bench/profile.sh).
	TFsdProf = "fsd-prof"
)

// AllTargets lists every target in report order.
var AllTargets = []string{TFsd, TFsdNoPoll, TDiod, TP9Localfs, THost, TEcho}

// subjects are the servers whose ratios the report judges: fsd, and p9's
// own server over localfs as a reference (and fsd's stand-in until fsd
// runs).
var subjects = []string{TFsd, TFsdNoPoll, TP9Localfs}

// Params are the knobs of one run.
type Params struct {
	Reps           int           `json:"reps"`            // measured repetitions per workload
	Warmup         time.Duration `json:"warmup_ns"`       // untimed run before them
	Duration       time.Duration `json:"duration_ns"`     // length of one repetition
	FileSize       int64         `json:"file_size"`       // bytes read and written per pass
	DirEntries     int           `json:"dir_entries"`     // files in the readdir directory
	LauncherStarts int           `json:"launcher_starts"` // start/stop cycles timed
	Msize          uint32        `json:"msize"`           // msize asked of every server
	Conns          int           `json:"conns"`           // connections of getattr8
	ServerCPU      int           `json:"server_cpu"`      // -1: unpinned
	ClientCPU      int           `json:"client_cpu"`
}

// FullParams are `make bench`'s parameters.
func FullParams() Params {
	// Many short repetitions rather than a few long ones: with the
	// targets interleaved, a burst of other work on the machine spoils a
	// repetition or two, and the median of nine shrugs that off.
	return Params{Reps: 9, Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond,
		FileSize: 256 << 20, DirEntries: 10000, LauncherStarts: 50, Msize: 1 << 20, Conns: 8,
		ServerCPU: 0, ClientCPU: 1}
}

// QuickParams are a smoke run's parameters (-quick).
func QuickParams() Params {
	return Params{Reps: 3, Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond,
		FileSize: 16 << 20, DirEntries: 1000, LauncherStarts: 5, Msize: 1 << 20, Conns: 8,
		ServerCPU: 0, ClientCPU: 1}
}

// Results is everything one run measured (bench/out/results.json).
type Results struct {
	Machine   Machine                    `json:"machine"`
	Command   string                     `json:"command"`
	Quick     bool                       `json:"quick"`
	Params    Params                     `json:"params"`
	Started   time.Time                  `json:"started"`
	Elapsed   time.Duration              `json:"elapsed_ns"`
	Targets   map[string]*TargetInfo     `json:"targets"`
	Workloads []*WorkloadResult          `json:"workloads"`
	Goals     []*GoalResult              `json:"goals"`
	Launcher  *LauncherResult            `json:"launcher,omitempty"`
	Baseline  *Results                   `json:"-"`
	Extra     map[string]json.RawMessage `json:"extra,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	MemoryMB int64  `json:"memory_mb"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Date     string `json:"date"`
	Scratch  string `json:"scratch"`  // export directory's file system
	Diod     string `json:"diod"`     // package version
	Launcher string `json:"launcher"` // fsd-launcher --version
	Pinning  string `json:"pinning"`  // what was pinned where
	// LoadBefore and Load are the load averages (1, 5, 15 min) before and
	// after the measurements: other work on the machine skews figures.
	LoadBefore string `json:"load_before"`
	Load       string `json:"load_after"`
}

// TargetInfo is one target's setup and footprint.
type TargetInfo struct {
	Name      string `json:"name"`
	Label     string `json:"label"`
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"` // why it did not run
	Msize     uint32 `json:"msize,omitempty"` // granted
	PID       int    `json:"pid,omitempty"`
	CPUs      string `json:"cpus,omitempty"` // the server's Cpus_allowed_list
	IdleRSS   int64  `json:"idle_rss_kib,omitempty"`
	BusyHWM   int64  `json:"busy_hwm_kib,omitempty"` // peak RSS during getattr8
	PeakHWM   int64  `json:"peak_hwm_kib,omitempty"` // peak RSS over the whole run
	Notes     string `json:"notes,omitempty"`
	// Crashes lists each time the server died during the run (it is
	// restarted for the next workload).
	Crashes []string `json:"crashes,omitempty"`
	// Syscalls counts the server's system calls by name over the run
	// ("total" included), when it ran under strace (WithStrace).
	Syscalls map[string]int64 `json:"syscalls,omitempty"`
	// Profile is fsdprof's account of its life (fsd-prof only).
	Profile *ProfileStats `json:"profile,omitempty"`
}

// ProfileStats is what fsdprof writes to stats.json when it stops.
type ProfileStats struct {
	Mallocs    uint64 `json:"mallocs"`
	TotalAlloc uint64 `json:"total_alloc_bytes"`
	NumGC      uint32 `json:"num_gc"`
	PauseNs    uint64 `json:"gc_pause_ns"`
	MaxRSSKiB  int64  `json:"max_rss_kib"`
	Dir        string `json:"dir"` // where cpu.pprof and allocs.pprof are
}

// WorkloadResult is one workload across targets.
type WorkloadResult struct {
	ID      string                  `json:"id"`
	Title   string                  `json:"title"`
	Unit    string                  `json:"unit"`
	Conns   int                     `json:"conns"`
	Results map[string]*Measurement `json:"results"` // by target
}

// Measurement is one workload on one target.
type Measurement struct {
	Median float64   `json:"median"`
	Reps   []float64 `json:"reps,omitempty"`
	Error  string    `json:"error,omitempty"`
	Note   string    `json:"note,omitempty"`
	// Units is everything done, warm-up included (operations, MB or
	// entries): the denominator for per-operation costs.
	Units float64 `json:"units"`
	// ServerCPU is the CPU time (s) the server process used while this
	// workload ran on it, warm-up included (0 for the host).
	ServerCPU float64 `json:"server_cpu_s,omitempty"`
	err       error   // Error's cause, for errors.Is
}

// ok reports whether m holds a value.
func (m *Measurement) ok() bool { return m != nil && m.Error == "" && m.Median > 0 }

// value returns the median of workload w on target t, or false.
func (r *Results) value(w, t string) (float64, bool) {
	for _, wr := range r.Workloads {
		if wr.ID == w {
			if m := wr.Results[t]; m.ok() {
				return m.Median, true
			}
		}
	}
	return 0, false
}

// ratio returns value(w, num)/value(w, den), or false.
func (r *Results) ratio(w, num, den string) (float64, bool) {
	a, ok1 := r.value(w, num)
	b, ok2 := r.value(w, den)
	if !ok1 || !ok2 {
		return 0, false
	}
	return a / b, true
}

// Goal is one target the issue sets, as a ratio of a subject to a peer in
// the same run (Min) or as an absolute launcher limit (Max).
type Goal struct {
	ID       string  `json:"id"`
	Title    string  `json:"title"`
	Workload string  `json:"workload,omitempty"`
	Versus   string  `json:"versus,omitempty"` // peer target of the ratio
	Min      float64 `json:"min,omitempty"`    // ratio at least
	Max      float64 `json:"max,omitempty"`    // launcher value at most
	Unit     string  `json:"unit,omitempty"`   // of Max
}

// GoalResult is a goal with what each subject reached.
type GoalResult struct {
	Goal
	Values map[string]float64 `json:"values"` // by subject
	Met    map[string]bool    `json:"met"`
}

// ratioGoals are the ratio targets.
var ratioGoals = []Goal{
	{ID: "getattr-floor", Title: "getattr, 1 connection vs echo floor", Workload: WGetattr, Versus: TEcho, Min: 0.9},
	{ID: "getattr8-floor", Title: "getattr, 8 connections vs 8-connection floor", Workload: WGetattr8, Versus: TEcho, Min: 0.6},
	{ID: "create-diod", Title: "create+close+unlink vs diod", Workload: WCreate, Versus: TDiod, Min: 1.5},
	{ID: "walk-diod", Title: "walk+clunk vs diod", Workload: WWalk, Versus: TDiod, Min: 1.2},
	{ID: "readdir-diod", Title: "readdir (entries/s) vs diod", Workload: WReaddir, Versus: TDiod, Min: 1.0},
	{ID: "read-host", Title: "sequential read vs host page cache", Workload: WRead, Versus: THost, Min: 0.35},
	{ID: "write-host", Title: "sequential write vs host", Workload: WWrite, Versus: THost, Min: 0.25},
}

// Launcher goal IDs.
const (
	GStart   = "launcher-start"
	GStop    = "launcher-stop"
	GIdleRSS = "idle-rss"
	GBusyRSS = "busy-rss"
)

// limitGoals are the absolute launcher and footprint limits.
var limitGoals = []Goal{
	{ID: GStart, Title: "`start` to ready, median", Max: 20, Unit: "ms"},
	{ID: GStop, Title: "`stop` (daemon obeys SIGTERM), median", Max: 20, Unit: "ms"},
	{ID: GIdleRSS, Title: "idle daemon RSS", Max: 10, Unit: "MiB"},
	{ID: GBusyRSS, Title: "peak RSS, 8 busy connections", Max: 64, Unit: "MiB"},
}

// LauncherResult is fsd's launcher timing.
type LauncherResult struct {
	Starts      int       `json:"starts"`
	StartMedian float64   `json:"start_median_ms"`
	StopMedian  float64   `json:"stop_median_ms"`
	StartMs     []float64 `json:"start_ms"`
	StopMs      []float64 `json:"stop_ms"`
	Error       string    `json:"error,omitempty"`
}

// evaluate fills r.Goals from the measurements.
func (r *Results) evaluate() {
	r.Goals = r.Goals[:0]
	for _, g := range ratioGoals {
		gr := &GoalResult{Goal: g, Values: map[string]float64{}, Met: map[string]bool{}}
		for _, s := range subjects {
			if v, ok := r.ratio(g.Workload, s, g.Versus); ok {
				gr.Values[s] = v
				gr.Met[s] = v >= g.Min
			}
		}
		r.Goals = append(r.Goals, gr)
	}
	for _, g := range limitGoals {
		gr := &GoalResult{Goal: g, Values: map[string]float64{}, Met: map[string]bool{}}
		for _, s := range subjects {
			v, ok := r.limitValue(g.ID, s)
			if ok {
				gr.Values[s] = v
				gr.Met[s] = v <= g.Max
			}
		}
		r.Goals = append(r.Goals, gr)
	}
}

// limitValue returns the value a limit goal judges for target t.
func (r *Results) limitValue(id, t string) (float64, bool) {
	ti := r.Targets[t]
	switch id {
	case GStart, GStop:
		if t != TFsd || r.Launcher == nil || r.Launcher.Error != "" || r.Launcher.Starts == 0 {
			return 0, false
		}
		if id == GStart {
			return r.Launcher.StartMedian, true
		}
		return r.Launcher.StopMedian, true
	case GIdleRSS:
		if ti == nil || ti.IdleRSS == 0 {
			return 0, false
		}
		return float64(ti.IdleRSS) / 1024, true
	case GBusyRSS:
		if ti == nil || ti.BusyHWM == 0 {
			return 0, false
		}
		return float64(ti.BusyHWM) / 1024, true
	}
	return 0, false
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// WriteJSON writes r to path (creating its directory).
func WriteJSON(r *Results, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return errors.Wrapf(err, "mkdir %s", filepath.Dir(path))
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode results")
	}
	return errors.Wrapf(os.WriteFile(path, append(b, '\n'), 0o644), "write %s", path)
}

// ReadJSON reads results written by WriteJSON (a baseline).
func ReadJSON(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", path)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, errors.Wrapf(err, "decode %s", path)
	}
	return &r, nil
}
