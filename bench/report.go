package bench

import (
	"bytes"
	_ "embed"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/pkg/errors"
)

// Markers delimit the part of BENCHMARKS.md the harness rewrites.
const (
	MarkerStart = "<!-- bench:results:start -->"
	MarkerEnd   = "<!-- bench:results:end -->"
)

//go:embed BENCHMARKS.tmpl.md
var benchmarksTemplate string

// ErrMarkers is returned when BENCHMARKS.md has a start marker without an
// end marker after it (or the other way round).
var ErrMarkers = errors.New("BENCHMARKS.md: unbalanced result markers")

// UpdateBenchmarks writes the results section of the Markdown file at path:
// it replaces what lies between MarkerStart and MarkerEnd and keeps the
// rest, or writes the whole file from bench/BENCHMARKS.tmpl.md when path
// does not exist or has no markers. chart is the chart's path as the file
// links it ("" for none).
func UpdateBenchmarks(r *Results, path, chart string) error {
	tmpl, err := template.New("BENCHMARKS.md").Parse(benchmarksTemplate)
	if err != nil {
		return errors.Wrap(err, "parse BENCHMARKS template")
	}
	var full bytes.Buffer
	if err := tmpl.Execute(&full, struct{ Results string }{Markdown(r, chart)}); err != nil {
		return errors.Wrap(err, "render BENCHMARKS template")
	}
	out := full.String()
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if merged, ok, merr := splice(string(old), out); merr != nil {
			return errors.Wrap(merr, path)
		} else if ok {
			out = merged
		}
	case !errors.Is(err, os.ErrNotExist):
		return errors.Wrapf(err, "read %s", path)
	}
	return errors.Wrapf(os.WriteFile(path, []byte(out), 0o644), "write %s", path)
}

// splice replaces old's marker region with fresh's; ok is false when old
// has no markers.
func splice(old, fresh string) (string, bool, error) {
	os, oe := strings.Index(old, MarkerStart), strings.Index(old, MarkerEnd)
	if os < 0 && oe < 0 {
		return "", false, nil
	}
	if os < 0 || oe < os {
		return "", false, ErrMarkers
	}
	fs, fe := strings.Index(fresh, MarkerStart), strings.Index(fresh, MarkerEnd)
	if fs < 0 || fe < fs {
		return "", false, ErrMarkers
	}
	return old[:os] + fresh[fs:fe] + old[oe:], true, nil
}

// Markdown renders the results section (what goes between the markers).
func Markdown(r *Results, chart string) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "_Written by the harness (`bench/`); a rerun rewrites everything between the markers._\n\n")
	fmt.Fprintf(&b, "- **Command:** `%s`%s\n", r.Command, map[bool]string{true: " (quick smoke run: small sizes, short repetitions; not for comparison)", false: ""}[r.Quick])
	fmt.Fprintf(&b, "- **Machine:** %s, %d CPUs, %d MiB RAM; %s; %s\n", m.CPU, m.CPUs, m.MemoryMB, m.Kernel, m.Go)
	fmt.Fprintf(&b, "- **Date:** %s; run took %.0f s\n", m.Date, r.Elapsed.Seconds())
	fmt.Fprintf(&b, "- **Pinning:** %s; export on %s\n", m.Pinning, m.Scratch)
	if m.LoadBefore != "" {
		warn := ""
		if f := strings.Fields(m.LoadBefore); len(f) > 0 && parseFloat(f[0]) > busyLoad {
			warn = " — **the machine was busy before the run: absolute figures are low and noisy; compare ratios only**"
		}
		fmt.Fprintf(&b, "- **Load average** (1/5/15 min): %s before, %s after the measurements%s\n", m.LoadBefore, m.Load, warn)
	}
	fmt.Fprintf(&b, "- **Method:** median of %d repetitions of %s each after a %s warm-up, the targets' repetitions interleaved round-robin; msize asked %s; %d connections for the parallel getattr\n",
		r.Params.Reps, r.Params.Duration, r.Params.Warmup, sizeStr(int64(r.Params.Msize)), r.Params.Conns)
	var vers []string
	if m.Launcher != "" {
		vers = append(vers, "fsd-launcher "+m.Launcher)
	}
	if m.Diod != "" {
		vers = append(vers, "diod "+m.Diod)
	}
	if len(vers) > 0 {
		fmt.Fprintf(&b, "- **Versions:** %s\n", strings.Join(vers, ", "))
	}
	b.WriteString("\n")
	if chart != "" {
		fmt.Fprintf(&b, "![fsd against its targets](%s)\n\n", chart)
	}

	// Targets.
	b.WriteString("### Targets\n\n")
	b.WriteString("| Goal | Target | fsd | fsd, busy_poll off | p9-localfs (reference) |\n|---|---|---|---|---|\n")
	for _, g := range r.Goals {
		target := fmt.Sprintf("≥ %.2f×", g.Min)
		if g.Max > 0 {
			target = fmt.Sprintf("< %g %s", g.Max, g.Unit)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", g.Title, target, goalCell(g, TFsd, r), goalCell(g, TFsdNoPoll, r), goalCell(g, TP9Localfs, r))
	}
	b.WriteString("\n")

	// Workloads.
	cols := r.presentTargets()
	b.WriteString("### Throughput\n\n| Workload | Unit |")
	for _, t := range cols {
		fmt.Fprintf(&b, " %s |", labels[t])
	}
	b.WriteString(" fsd/diod | fsd/ceiling | fsd/floor |\n|---|---|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("---:|---:|---:|\n")
	var notes []string
	for _, w := range r.Workloads {
		title := w.Title
		if w.ID == WReaddir {
			title = fmt.Sprintf("readdir of %s entries", thousands(float64(r.Params.DirEntries)))
		}
		if w.ID == WRead || w.ID == WWrite {
			title = fmt.Sprintf("%s, %s file", w.Title, sizeStr(r.Params.FileSize))
		}
		if w.ID == WGetattr8 {
			title = fmt.Sprintf("getattr, %d connections at once", w.Conns)
		}
		fmt.Fprintf(&b, "| %s | %s |", title, w.Unit)
		for _, t := range cols {
			m := w.Results[t]
			switch {
			case m == nil:
				b.WriteString(" — |")
			case m.Error != "":
				notes = append(notes, fmt.Sprintf("%s on %s: %s", w.Title, labels[t], m.Error))
				fmt.Fprintf(&b, " error [%d] |", len(notes))
			default:
				cell := thousands(m.Median)
				if m.Note != "" && t != TFsd && strings.Contains(m.Note, "no ") {
					notes = append(notes, fmt.Sprintf("%s on %s: %s", w.Title, labels[t], m.Note))
					cell += fmt.Sprintf(" [%d]", len(notes))
				}
				fmt.Fprintf(&b, " %s |", cell)
			}
		}
		for _, den := range []string{TDiod, THost, TEcho} {
			if v, ok := r.ratio(w.ID, TFsd, den); ok {
				fmt.Fprintf(&b, " %.2f× |", v)
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")

	b.WriteString(cpuSection(r))

	// Footprint.
	servers := []string{}
	for _, t := range []string{TFsd, TFsdNoPoll, TDiod, TP9Localfs, TFsdProf} {
		if ti := r.Targets[t]; ti != nil && ti.Available {
			servers = append(servers, t)
		}
	}
	if len(servers) > 0 {
		b.WriteString(footprint(r, servers, &notes))
	}
	// Targets that did not run, and notes.
	for _, t := range AllTargets {
		if ti := r.Targets[t]; ti != nil && !ti.Available {
			notes = append(notes, fmt.Sprintf("%s did not run: %s", labels[t], ti.Error))
		}
	}
	for _, t := range AllTargets {
		if ti := r.Targets[t]; ti != nil {
			for _, c := range ti.Crashes {
				notes = append(notes, fmt.Sprintf("%s died during the run and was restarted: %s", labels[t], c))
			}
		}
	}
	for _, t := range AllTargets {
		if ti := r.Targets[t]; ti != nil && ti.Available && ti.Msize != 0 && ti.Msize != r.Params.Msize {
			notes = append(notes, fmt.Sprintf("%s granted msize %s (%s per read/write request)", labels[t], sizeStr(int64(ti.Msize)), sizeStr(int64(ioChunk(ti.Msize)))))
		}
	}
	if len(notes) > 0 {
		b.WriteString("Notes:\n\n")
		for i, n := range notes {
			fmt.Fprintf(&b, "%d. %s\n", i+1, oneLine(n))
		}
		b.WriteString("\n")
	}
	if ti := r.Targets[TFsdProf]; ti != nil && ti.Profile != nil {
		b.WriteString(profileSection(r, ti.Profile))
	}
	for _, t := range runTargets {
		if ti := r.Targets[t]; ti != nil && len(ti.Syscalls) > 0 {
			b.WriteString(syscallSection(r, t, ti.Syscalls))
		}
	}
	if r.Baseline != nil {
		b.WriteString(beforeAfter(r.Baseline, r))
	}
	return strings.TrimRight(b.String(), "\n")
}

// busyLoad is the 1-minute load average above which, before the harness
// starts, the machine counts as busy (2 CPUs here).
const busyLoad = 1.0

func parseFloat(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return v
}

// cpuSection renders the servers' CPU time per unit of work: what each
// server spends, independent of how busy the machine was.
func cpuSection(r *Results) string {
	var cols []string
	for _, t := range runTargets {
		if t == THost {
			continue
		}
		for _, w := range r.Workloads {
			if m := w.Results[t]; m.ok() && m.ServerCPU > 0 {
				cols = append(cols, t)
				break
			}
		}
	}
	if len(cols) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("### Server CPU time per unit of work\n\nThe server process's user+system CPU time over the workload (warm-up included) divided by the work done: lower is better, and little affected by other load on the machine.\n\n| Workload | per |")
	for _, t := range cols {
		fmt.Fprintf(&b, " %s |", labels[t])
	}
	b.WriteString("\n|---|---|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, w := range r.Workloads {
		fmt.Fprintf(&b, "| %s | %s |", w.Title, perUnit(w.Unit))
		for _, t := range cols {
			m := w.Results[t]
			if !m.ok() || m.ServerCPU <= 0 || m.Units <= 0 {
				b.WriteString(" — |")
				continue
			}
			us := m.ServerCPU / m.Units * 1e6
			switch {
			case us < 10:
				fmt.Fprintf(&b, " %.2f µs |", us)
			case us < 1000:
				fmt.Fprintf(&b, " %.0f µs |", us)
			default:
				fmt.Fprintf(&b, " %.1f ms |", us/1000)
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// perUnit names one unit of a rate unit: "ops/s" -> "op", "entries/s" ->
// "entry", "MB/s" -> "MB".
func perUnit(rate string) string {
	switch u := strings.TrimSuffix(rate, "/s"); u {
	case "ops":
		return "op"
	case "entries":
		return "entry"
	default:
		return u
	}
}

// footprint renders the launcher's timing and the servers' RSS.
func footprint(r *Results, servers []string, notes *[]string) string {
	var b strings.Builder
	b.WriteString("### Launcher and footprint\n\n| Measure |")
	for _, t := range servers {
		fmt.Fprintf(&b, " %s |", labels[t])
	}
	b.WriteString("\n|---|")
	for range servers {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	if lr := r.Launcher; lr != nil {
		row := func(name string, v float64) {
			fmt.Fprintf(&b, "| %s |", name)
			for _, t := range servers {
				if t == TFsd && lr.Starts > 0 {
					fmt.Fprintf(&b, " %.1f ms |", v)
				} else {
					b.WriteString(" — |")
				}
			}
			b.WriteString("\n")
		}
		row(fmt.Sprintf("`start` to ready, median of %d", lr.Starts), lr.StartMedian)
		row(fmt.Sprintf("`stop`, median of %d", lr.Starts), lr.StopMedian)
		if lr.Error != "" {
			*notes = append(*notes, "launcher timing: "+lr.Error)
		}
	}
	rss := func(name string, get func(*TargetInfo) int64) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, t := range servers {
			if v := get(r.Targets[t]); v > 0 {
				fmt.Fprintf(&b, " %.1f MiB |", float64(v)/1024)
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	rss("RSS idle, after start", func(t *TargetInfo) int64 { return t.IdleRSS })
	rss(fmt.Sprintf("peak RSS during getattr from %d connections", r.Params.Conns), func(t *TargetInfo) int64 { return t.BusyHWM })
	rss("peak RSS over the whole run (1 MiB I/O included)", func(t *TargetInfo) int64 { return t.PeakHWM })
	b.WriteString("\n")

	return b.String()
}

// profileSection renders fsdprof's allocation account: per unit of work
// when the run had one workload (bench/profile.sh runs them one at a time).
func profileSection(r *Results, ps *ProfileStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### fsd in-process profile\n\nProfiles in `%s` (cpu.pprof, allocs.pprof). Over the server's life: %s allocations, %s allocated, %d GC cycles (%.1f ms of pauses), max RSS %.1f MiB.\n\n",
		ps.Dir, thousands(float64(ps.Mallocs)), sizeStr(int64(ps.TotalAlloc)&^1023), ps.NumGC, float64(ps.PauseNs)/1e6, float64(ps.MaxRSSKiB)/1024)
	var done []*WorkloadResult
	for _, w := range r.Workloads {
		if m := w.Results[TFsdProf]; m != nil && m.Units > 0 {
			done = append(done, w)
		}
	}
	if len(done) == 1 {
		w := done[0]
		m := w.Results[TFsdProf]
		fmt.Fprintf(&b, "%s: %s %s done, **%.1f allocations and %s per %s**.\n\n", w.Title, thousands(m.Units), strings.TrimSuffix(w.Unit, "/s"),
			float64(ps.Mallocs)/m.Units, sizeStr(int64(float64(ps.TotalAlloc)/m.Units)), perUnit(w.Unit))
	}
	return b.String()
}

// syscallSection renders a strace count: per unit of work when the run
// had one workload.
func syscallSection(r *Results, t string, counts map[string]int64) string {
	var b strings.Builder
	var units float64
	var unit string
	n := 0
	for _, w := range r.Workloads {
		if m := w.Results[t]; m != nil && m.Units > 0 {
			units, unit = m.Units, perUnit(w.Unit)
			n++
		}
	}
	fmt.Fprintf(&b, "### System calls of %s (strace -c; figures above are slowed by it)\n\n| syscall | calls |", labels[t])
	per := n == 1
	if per {
		fmt.Fprintf(&b, " per %s |\n|---|---:|---:|\n", unit)
	} else {
		b.WriteString("\n|---|---:|\n")
	}
	names := sortedKeys(counts)
	sort.SliceStable(names, func(i, j int) bool { return counts[names[i]] > counts[names[j]] })
	for _, name := range names {
		fmt.Fprintf(&b, "| %s | %s |", name, thousands(float64(counts[name])))
		if per {
			fmt.Fprintf(&b, " %.2f |", float64(counts[name])/units)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// beforeAfter renders fsd's numbers in a baseline run next to this run's.
func beforeAfter(before, after *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### fsd before and after\n\nBefore: the run of %s (`%s`). After: this run. Ratios are each run's own.\n\n", before.Machine.Date, before.Command)
	b.WriteString("| Workload | Unit | fsd before | fsd after | change |\n|---|---|---:|---:|---:|\n")
	for _, w := range after.Workloads {
		a, okA := after.value(w.ID, TFsd)
		bv, okB := before.value(w.ID, TFsd)
		cell := func(v float64, ok bool) string {
			if !ok {
				return "—"
			}
			return thousands(v)
		}
		change := "—"
		if okA && okB {
			change = fmt.Sprintf("%+.0f%%", (a/bv-1)*100)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", w.Title, w.Unit, cell(bv, okB), cell(a, okA), change)
	}
	b.WriteString("\n| Goal | Target | before | after |\n|---|---|---:|---:|\n")
	for _, g := range after.Goals {
		var bg *GoalResult
		for _, x := range before.Goals {
			if x.ID == g.ID {
				bg = x
			}
		}
		target := fmt.Sprintf("≥ %.2f×", g.Min)
		if g.Max > 0 {
			target = fmt.Sprintf("< %g %s", g.Max, g.Unit)
		}
		bcell := "—"
		if bg != nil {
			bcell = goalCell(bg, TFsd, before)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Title, target, bcell, goalCell(g, TFsd, after))
	}
	b.WriteString("\n")
	return b.String()
}

// goalCell shows a subject's value for a goal with a mark.
func goalCell(g *GoalResult, s string, r *Results) string {
	v, ok := g.Values[s]
	if !ok {
		if ti := r.Targets[s]; ti == nil {
			return "not run"
		} else if !ti.Available {
			return "unavailable"
		}
		return "—"
	}
	mark := "✗"
	if g.Met[s] {
		mark = "✓"
	}
	if g.Max > 0 {
		return fmt.Sprintf("%.1f %s %s", v, g.Unit, mark)
	}
	return fmt.Sprintf("%.2f× %s", v, mark)
}

// presentTargets are the targets of the run, in report order.
func (r *Results) presentTargets() []string {
	var out []string
	for _, t := range runTargets {
		if _, ok := r.Targets[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

// thousands formats v with thousands separators, keeping 3 significant
// digits for small values.
func thousands(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.3g", v)
	}
	s := fmt.Sprintf("%.0f", math.Round(v))
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func sizeStr(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", "\\|")
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteFileAll writes data to path, creating its directory.
func WriteFileAll(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return errors.Wrapf(err, "mkdir %s", filepath.Dir(path))
	}
	return errors.Wrapf(os.WriteFile(path, data, 0o644), "write %s", path)
}
