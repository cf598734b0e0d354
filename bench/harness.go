package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrUnknownTarget is returned by Run for a target name it does not know.
var ErrUnknownTarget = errors.New("unknown target")

// ErrUnknownWorkload is returned by Run for a workload ID it does not know.
var ErrUnknownWorkload = errors.New("unknown workload")

func knownWorkload(id string) bool {
	for _, w := range workloads() {
		if w.id == id {
			return true
		}
	}
	return false
}

// runTargets is the order targets are started and reported in.
var runTargets = append(append([]string(nil), AllTargets...), TFsdProf)

// Harness runs the benchmark. Create it with New.
type Harness struct {
	p          Params
	quick      bool
	targets    []string
	launcher   string
	diod       string
	scratch    string // parent of the run's scratch directory
	command    string
	keep       bool
	log        *logrus.Entry
	only       []string // workload IDs; empty: all
	strace     string   // target whose server strace counts
	fsdSandbox string   // fsd's "sandbox" key; empty: the launcher's default
	fsdprof    string   // bench/cmd/fsdprof binary
	profileDir string   // where it writes its profiles

	// Set by Run.
	seq    atomic.Int64 // makes the names runners create unique
	dir    string       // the run's scratch directory
	export string       // the export every server serves
	run    string       // sockets, configs, logs
}

// Option configures a Harness.
type Option func(*Harness)

// WithParams replaces the run's parameters (default FullParams).
func WithParams(p Params) Option { return func(h *Harness) { h.p = p } }

// WithQuick marks the run as a smoke run (QuickParams, unless WithParams
// comes after it).
func WithQuick() Option { return func(h *Harness) { h.quick = true; h.p = QuickParams() } }

// WithTargets selects the targets (default AllTargets), in any order.
func WithTargets(names ...string) Option { return func(h *Harness) { h.targets = names } }

// WithLauncher sets the fsd-launcher binary (default bin/fsd-launcher).
func WithLauncher(path string) Option { return func(h *Harness) { h.launcher = path } }

// WithDiod sets the diod binary (default "diod" on PATH, then /usr/sbin).
func WithDiod(path string) Option { return func(h *Harness) { h.diod = path } }

// WithScratchDir sets where the run's scratch directory is created
// (default /dev/shm when it exists: page cache only, no disk writeback in
// the measurements; else os.TempDir).
func WithScratchDir(dir string) Option { return func(h *Harness) { h.scratch = dir } }

// WithCommand records the command line that produced the run.
func WithCommand(cmd string) Option { return func(h *Harness) { h.command = cmd } }

// WithKeepScratch leaves the scratch directory (logs, sockets) in place.
func WithKeepScratch() Option { return func(h *Harness) { h.keep = true } }

// WithWorkloads limits the run to the given workload IDs.
func WithWorkloads(ids ...string) Option { return func(h *Harness) { h.only = ids } }

// WithFsdProf sets the fsdprof binary for the fsd-prof target and the
// directory it writes its profiles to.
func WithFsdProf(bin, profileDir string) Option {
	return func(h *Harness) { h.fsdprof, h.profileDir = bin, profileDir }
}

// WithStrace counts target's system calls with `strace -c` over the run
// (profiling only: strace slows the server down many times).
func WithStrace(target string) Option { return func(h *Harness) { h.strace = target } }

// WithFsdSandbox sets the "sandbox" key of fsd's configuration ("none",
// "chroot", "namespace"); by default the key is absent and fsd picks the
// strongest mode, as a deployment would.
func WithFsdSandbox(mode string) Option { return func(h *Harness) { h.fsdSandbox = mode } }

// WithLogger sets the progress logger (default: discard).
func WithLogger(l *logrus.Entry) Option { return func(h *Harness) { h.log = l } }

// New returns a harness with the given options.
func New(opts ...Option) *Harness {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	h := &Harness{
		p:        FullParams(),
		targets:  AllTargets,
		launcher: "bin/fsd-launcher",
		diod:     "diod",
		log:      quiet.WithField("subsystem", "bench"),
	}
	for _, o := range opts {
		o(h)
	}
	if h.scratch == "" {
		h.scratch = os.TempDir()
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			h.scratch = "/dev/shm"
		}
	}
	if _, err := exec.LookPath(h.diod); err != nil && h.diod == "diod" {
		h.diod = "/usr/sbin/diod" // root's PATH may lack sbin
	}
	return h
}

// Run runs every selected target and returns the results. A target that
// cannot start or a workload that fails is recorded in the results, not
// returned as an error; Run fails only when it cannot run at all.
func (h *Harness) Run(ctx context.Context) (res *Results, err error) {
	for _, t := range h.targets {
		if labels[t] == "" {
			return nil, errors.Wrap(ErrUnknownTarget, t)
		}
	}
	for _, id := range h.only {
		if !knownWorkload(id) {
			return nil, errors.Wrap(ErrUnknownWorkload, id)
		}
	}
	// No core files from the harness or the servers it starts (the soft
	// limit only: diod raises its own and refuses to start when it cannot,
	// so it runs from a scratch directory, where a core would land).
	var core unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_CORE, &core) == nil {
		core.Cur = 0
		_ = unix.Setrlimit(unix.RLIMIT_CORE, &core)
	}

	h.dir, err = os.MkdirTemp(h.scratch, "fsdbench-")
	if err != nil {
		return nil, errors.Wrapf(err, "scratch directory in %s", h.scratch)
	}
	if !h.keep {
		defer func() {
			if rerr := os.RemoveAll(h.dir); rerr != nil && err == nil {
				err = errors.Wrapf(rerr, "remove %s", h.dir)
			}
		}()
	}
	h.export = filepath.Join(h.dir, "export")
	h.run = filepath.Join(h.dir, "run")
	if err := os.MkdirAll(h.run, 0o755); err != nil {
		return nil, errors.Wrapf(err, "mkdir %s", h.run)
	}
	start := time.Now()
	res = &Results{Command: h.command, Quick: h.quick, Params: h.p, Started: start.UTC(),
		Targets: map[string]*TargetInfo{}}
	res.Machine = h.machine()
	res.Machine.LoadBefore = loadAvg()
	h.log.WithField("dir", h.dir).Info("preparing the export tree")
	if err := prepareExport(h.export, h.p); err != nil {
		return nil, err
	}
	for _, w := range h.workloads() {
		res.Workloads = append(res.Workloads, &WorkloadResult{ID: w.id, Title: w.title, Unit: w.unit,
			Conns: w.connsFor(h.p), Results: map[string]*Measurement{}})
	}
	h.log.Info("starting the servers")
	lives := h.startTargets(ctx, res)
	defer func() {
		for _, l := range lives {
			if l.ep != nil {
				if err := l.ep.stop(); err != nil {
					l.ti.Notes = strings.TrimSpace(l.ti.Notes + " stop: " + err.Error())
				}
				l.ep = nil
			}
		}
	}()
	var tr *tracer
	var trLive *live
	for _, l := range lives {
		if l.name == h.strace {
			trLive = l
		}
	}
	defer func() {
		if tr != nil {
			_, _ = tr.detach()
		}
	}()
	for _, w := range h.workloads() {
		if err := ctx.Err(); err != nil {
			return nil, errors.Wrap(err, "benchmark interrupted")
		}
		h.log.WithField("workload", w.id).Info("measuring")
		if tr == nil && trLive != nil && trLive.ep != nil {
			var err error
			if tr, err = attachStrace(trLive.ep.pid, filepath.Join(h.run, "strace.txt")); err != nil {
				trLive.ti.Notes = strings.TrimSpace(trLive.ti.Notes + " " + err.Error())
				trLive = nil
			}
		}
		ms := h.runWorkload(ctx, w, lives)
		for _, wr := range res.Workloads {
			if wr.ID == w.id {
				wr.Results = ms
			}
		}
	}
	for _, l := range lives {
		if l.ep == nil {
			continue
		}
		if derr := l.ep.died(); derr != nil {
			l.ti.Crashes = append(l.ti.Crashes, derr.Error())
			continue
		}
		l.ti.PeakHWM, _ = procStatusKiB(l.ep.pid, "VmHWM")
		if l.ti.PeakHWM < l.ti.BusyHWM {
			l.ti.PeakHWM = l.ti.BusyHWM
		}
	}
	res.Machine.Load = loadAvg()
	if tr != nil {
		counts, err := tr.detach()
		tr = nil
		if err != nil {
			trLive.ti.Notes = strings.TrimSpace(trLive.ti.Notes + " " + err.Error())
		} else {
			trLive.ti.Syscalls = counts
		}
	}
	// Stop every server (fsd-prof writes its profiles then), so that the
	// launcher timing below has the machine to itself.
	for _, l := range lives {
		if l.ep == nil {
			continue
		}
		if err := l.ep.stop(); err != nil {
			l.ti.Notes = strings.TrimSpace(l.ti.Notes + " stop: " + err.Error())
		}
		l.ep = nil
		if l.name == TFsdProf {
			if ps, err := h.readProfileStats(); err != nil {
				l.ti.Notes = strings.TrimSpace(l.ti.Notes + " " + err.Error())
			} else {
				l.ti.Profile = ps
			}
		}
	}
	if h.selected(TFsd) && res.Targets[TFsd].Available {
		h.log.Info("timing the launcher")
		res.Launcher = h.launcherTiming(ctx)
	}
	res.evaluate()
	res.Elapsed = time.Since(start)
	return res, nil
}

// workloads are the run's workloads.
func (h *Harness) workloads() []workload {
	if len(h.only) == 0 {
		return workloads()
	}
	var out []workload
	for _, w := range workloads() {
		for _, id := range h.only {
			if w.id == id {
				out = append(out, w)
			}
		}
	}
	return out
}

func (h *Harness) selected(t string) bool {
	for _, s := range h.targets {
		if s == t {
			return true
		}
	}
	return false
}

// connsFor is the number of connections the workload uses.
func (w workload) connsFor(p Params) int {
	if w.conns > 1 {
		return p.Conns
	}
	return 1
}

// live is one selected target during a run: its server (nil for the host)
// and how to start it again after a crash.
type live struct {
	name string
	ti   *TargetInfo
	ep   *endpoint
}

// takes reports whether the target takes part in workload w.
func (l *live) takes(w workload) bool {
	switch l.name {
	case THost:
		return w.host != nil
	case TEcho:
		return w.floor != nil
	}
	return w.nine != nil
}

// startServer starts target t's server and waits until it answers: a
// Tversion (for the floor, a connection).
func (h *Harness) startServer(ctx context.Context, t string) (*endpoint, error) {
	var ep *endpoint
	var err error
	switch t {
	case TEcho:
		ep, err = h.startSelf(t, roleEcho, fmt.Sprintf("%s=%d", envReplySize, rgetattrSize))
	case TP9Localfs:
		ep, err = h.startSelf(t, roleP9Localfs, envDir+"="+h.export)
	case TDiod:
		ep, err = h.startDiod(ctx)
	case TFsd:
		ep, err = h.startFsd(ctx, TFsd, "")
	case TFsdNoPoll:
		ep, err = h.startFsd(ctx, TFsdNoPoll, "busy_poll = \"0s\"\n")
	case TFsdProf:
		ep, err = h.startFsdProf()
	default:
		return nil, errors.Wrap(ErrUnknownTarget, t)
	}
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if t == TEcho {
		var c net.Conn
		if c, err = dialUnix(nctx, ep.socket); err == nil {
			c.Close()
		}
	} else {
		ep.msize, err = negotiateMsize(nctx, ep.socket, ep.msize)
	}
	if err != nil {
		_ = ep.stop()
		return nil, err
	}
	return ep, nil
}

// startTargets starts every selected server; one that cannot start is
// recorded as unavailable.
func (h *Harness) startTargets(ctx context.Context, res *Results) []*live {
	var lives []*live
	for _, t := range runTargets {
		if !h.selected(t) {
			continue
		}
		l := &live{name: t, ti: &TargetInfo{Name: t, Label: labels[t]}}
		res.Targets[t] = l.ti
		if t == THost {
			l.ti.Available = true
			l.ti.Notes = "plain syscalls in the client process"
			lives = append(lives, l)
			continue
		}
		ep, err := h.startServer(ctx, t)
		if err != nil {
			l.ti.Error = err.Error()
			h.log.WithError(err).WithField("target", t).Warn("target unavailable")
			continue
		}
		l.ep = ep
		l.ti.Available = true
		l.ti.PID, l.ti.Msize = ep.pid, ep.msize
		l.ti.CPUs, _ = cpusAllowed(ep.pid)
		l.ti.IdleRSS, _ = procStatusKiB(ep.pid, "VmRSS")
		h.log.WithFields(logrus.Fields{"target": t, "pid": ep.pid, "cpus": l.ti.CPUs}).Info("started")
		lives = append(lives, l)
	}
	return lives
}

// restart notes that l's server died and starts it again, so that a crash
// costs a retry, not the rest of the run. It reports whether l is up.
func (h *Harness) restart(ctx context.Context, l *live, derr error) bool {
	l.ti.Crashes = append(l.ti.Crashes, derr.Error())
	h.log.WithError(derr).WithField("target", l.name).Warn("server died; restarting it")
	_ = l.ep.stop() // reaps it and removes its socket
	ep, err := h.startServer(ctx, l.name)
	if err != nil {
		l.ti.Crashes = append(l.ti.Crashes, "restart: "+err.Error())
		l.ep = nil
		return false
	}
	l.ep = ep
	return true
}

// maxCrashRetries bounds how often a workload is rerun on a target whose
// server died under it (hugelgupf/p9's server dies now and then when a
// client hangs up: its WaitGroup defect, see NOTES.md).
const maxCrashRetries = 3

// dying reports whether ep's server has died or dies within a short wait
// (a server that failed a request may take a moment to exit).
func dying(ep *endpoint) bool {
	for deadline := time.Now().Add(time.Second); ; {
		if ep.died() != nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runWorkload measures w on every live target that takes part, the
// targets' repetitions interleaved (see measure), and retries a target
// whose server died under it on its own.
func (h *Harness) runWorkload(ctx context.Context, w workload, lives []*live) map[string]*Measurement {
	var part []*live
	for _, l := range lives {
		if l.takes(w) && (l.name == THost || l.ep != nil) {
			part = append(part, l)
		}
	}
	busy := w.id == WGetattr8
	if busy {
		for _, l := range part {
			if l.ep != nil {
				_ = resetPeakRSS(l.ep.pid)
			}
		}
	}
	out := h.measure(ctx, w, part)
	for _, l := range part {
		for attempt := 0; l.ep != nil && attempt < maxCrashRetries; attempt++ {
			m := out[l.name]
			if m.err == nil || errors.Is(m.err, ErrUnsupported) || !dying(l.ep) {
				break
			}
			if !h.restart(ctx, l, l.ep.died()) {
				break
			}
			if busy {
				_ = resetPeakRSS(l.ep.pid)
			}
			out[l.name] = h.measure(ctx, w, []*live{l})[l.name]
		}
		if busy && l.ep != nil {
			l.ti.BusyHWM, _ = procStatusKiB(l.ep.pid, "VmHWM")
		}
	}
	return out
}

// contender is one target's runners within a workload.
type contender struct {
	l       *live
	runners []*runner
	m       *Measurement
}

func (c *contender) fail(err error) {
	if c.m.err == nil {
		c.m.err, c.m.Error = err, err.Error()
	}
}

// measure builds each target's runners (one per connection), warms each
// up, then runs the repetitions round-robin across targets, rotating the
// order each round, so that whatever else the machine is doing at a moment
// falls on every target alike and the ratios stay fair. A target that
// fails drops out with its error.
func (h *Harness) measure(ctx context.Context, w workload, part []*live) map[string]*Measurement {
	out := map[string]*Measurement{}
	var cs []*contender
	var sessions []*session
	defer func() {
		for _, c := range cs {
			for _, r := range c.runners {
				if err := r.Close(); err != nil {
					c.fail(err)
				}
			}
		}
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	// The servers' CPU time, read before and after, is the workload's cost
	// on each (the servers idle while the other targets take their turn).
	cpu0 := map[string]float64{}
	for _, l := range part {
		if l.ep != nil {
			if t0, err := cpuSeconds(l.ep.pid); err == nil {
				cpu0[l.name] = t0
			}
		}
	}
	defer func() {
		for _, l := range part {
			if t0, ok := cpu0[l.name]; ok && l.ep != nil {
				if t1, err := cpuSeconds(l.ep.pid); err == nil {
					out[l.name].ServerCPU = t1 - t0
				}
			}
		}
	}()
	for _, l := range part {
		c := &contender{l: l, m: &Measurement{}}
		out[l.name] = c.m
		for i := 0; i < w.connsFor(h.p); i++ {
			r, err := h.newRunner(ctx, w, l, i, &sessions)
			if err != nil {
				c.fail(err)
				break
			}
			c.runners = append(c.runners, r)
		}
		if c.m.err == nil {
			c.m.Note = c.runners[0].note
			if _, u, err := runFor(ctx, c.runners, h.p.Warmup); err != nil {
				c.fail(err)
			} else {
				c.m.Units += u
			}
		}
		cs = append(cs, c)
	}
	for rep := 0; rep < h.p.Reps; rep++ {
		for k := range cs {
			c := cs[(k+rep)%len(cs)]
			if c.m.err != nil {
				continue
			}
			v, u, err := runFor(ctx, c.runners, h.p.Duration)
			if err != nil {
				c.fail(err)
				continue
			}
			c.m.Reps = append(c.m.Reps, v)
			c.m.Units += u
		}
	}
	for _, c := range cs {
		if c.m.err == nil {
			c.m.Median = median(c.m.Reps)
		}
	}
	return out
}

// newRunner sets up connection i of workload w on target l.
func (h *Harness) newRunner(ctx context.Context, w workload, l *live, i int, sessions *[]*session) (*runner, error) {
	prefix := fmt.Sprintf("%s-%d-%d-", l.name, h.seq.Add(1), i)
	switch l.name {
	case THost:
		return w.host(&hostEnv{p: h.p, export: h.export, prefix: prefix})
	case TEcho:
		return w.floor(&floorEnv{ctx: ctx, socket: l.ep.socket})
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	s, err := openSession(sctx, l.ep)
	if err != nil {
		return nil, err
	}
	*sessions = append(*sessions, s)
	return w.nine(&nineEnv{ctx: ctx, s: s, msize: l.ep.msize, p: h.p, export: h.export, prefix: prefix})
}

// runFor runs the runners' ops for about d (at least one op each) and
// returns units per second and the units done. One runner: the time inside op only (prep is
// untimed). Several: all at once, total units over the wall time.
func runFor(ctx context.Context, runners []*runner, d time.Duration) (float64, float64, error) {
	if len(runners) == 1 {
		r := runners[0]
		var units float64
		var busy time.Duration
		for start := time.Now(); busy == 0 || time.Since(start) < d; {
			if ctx.Err() != nil {
				return 0, 0, errors.Wrap(ctx.Err(), "interrupted")
			}
			if r.prep != nil {
				if err := r.prep(); err != nil {
					return 0, 0, err
				}
			}
			t0 := time.Now()
			u, err := r.op()
			busy += time.Since(t0)
			if err != nil {
				return 0, 0, err
			}
			units += u
		}
		return units / busy.Seconds(), units, nil
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		units float64
		first error
		ready sync.WaitGroup
		gate  = make(chan struct{})
	)
	ready.Add(len(runners))
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			var u float64
			var err error
			for deadline := time.Now().Add(d); err == nil && (u == 0 || time.Now().Before(deadline)); {
				if ctx.Err() != nil {
					err = errors.Wrap(ctx.Err(), "interrupted")
					break
				}
				var n float64
				n, err = r.op()
				u += n
			}
			mu.Lock()
			units += u
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		}()
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return 0, 0, first
	}
	return units / elapsed.Seconds(), units, nil
}

// prepareExport builds the tree every target serves.
func prepareExport(dir string, p Params) error {
	for _, d := range []string{dir, filepath.Join(dir, nameDir), filepath.Join(dir, nameCreates)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return errors.Wrapf(err, "mkdir %s", d)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, nameFile), []byte("fsdbench\n"), 0o644); err != nil {
		return errors.Wrapf(err, "write %s", nameFile)
	}
	for i := 0; i < p.DirEntries; i++ {
		path := filepath.Join(dir, nameDir, fmt.Sprintf("entry-%05d", i))
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return errors.Wrapf(err, "create %s", path)
		}
		unix.Close(fd)
	}
	buf := make([]byte, 1<<20)
	fill(buf)
	for _, name := range []string{nameBig, nameWrite} {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return errors.Wrapf(err, "create %s", path)
		}
		for off := int64(0); off < p.FileSize && name == nameBig; off += int64(len(buf)) {
			chunk := buf
			if rest := p.FileSize - off; rest < int64(len(chunk)) {
				chunk = chunk[:rest]
			}
			if _, err := f.Write(chunk); err != nil {
				f.Close()
				return errors.Wrapf(err, "write %s", path)
			}
		}
		if err := f.Close(); err != nil {
			return errors.Wrapf(err, "close %s", path)
		}
	}
	return nil
}

// machine describes this machine and run.
func (h *Harness) machine() Machine {
	m := Machine{CPUs: onlineCPUs(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		m.Kernel = unix.ByteSliceToString(uts.Sysname[:]) + " " + unix.ByteSliceToString(uts.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryMB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	var sfs unix.Statfs_t
	if unix.Statfs(h.dir, &sfs) == nil {
		m.Scratch = fmt.Sprintf("%s (%s)", h.scratch, fsName(sfs.Type))
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "diod").Output(); err == nil {
		m.Diod = string(out)
	}
	if out, err := exec.Command(h.launcher, "version").Output(); err == nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		m.Launcher = strings.TrimPrefix(first, "fsd-launcher ")
	}
	if h.p.ServerCPU == NoPin {
		m.Pinning = "none"
	} else {
		m.Pinning = fmt.Sprintf("servers on CPU %d, client on CPU %d", h.p.ServerCPU, h.p.ClientCPU)
	}
	return m
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// onlineCPUs counts the machine's CPUs (runtime.NumCPU counts only those
// this pinned process may use).
func onlineCPUs() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "processor" {
			n++
		}
	}
	if n == 0 {
		return runtime.NumCPU()
	}
	return n
}

func fsName(t int64) string {
	switch t {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs 0x%x", t)
}

// launcherTiming starts and stops fsd through the launcher
// Params.LauncherStarts times.
func (h *Harness) launcherTiming(ctx context.Context) *LauncherResult {
	lr := &LauncherResult{}
	cfg, err := h.fsdConfig("fsd-timing", "")
	if err != nil {
		lr.Error = err.Error()
		return lr
	}
	for i := 0; i < h.p.LauncherStarts; i++ {
		rep, st, err := h.launcherStart(ctx, cfg, h.p.ServerCPU)
		if err != nil {
			lr.Error = err.Error()
			break
		}
		sp, err := h.launcherStop(ctx, rep)
		if err != nil {
			lr.Error = err.Error()
			break
		}
		lr.StartMs = append(lr.StartMs, float64(st.Microseconds())/1000)
		lr.StopMs = append(lr.StopMs, float64(sp.Microseconds())/1000)
	}
	lr.Starts = len(lr.StartMs)
	lr.StartMedian = median(lr.StartMs)
	lr.StopMedian = median(lr.StopMs)
	return lr
}
