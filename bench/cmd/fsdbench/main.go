// Command fsdbench is the benchmark harness behind `make bench` (see
// package bench): it measures fsd, diod, p9's localfs server, the host and
// an echo floor with the same workloads and client, and writes
// bench/out/results.json, the results section of BENCHMARKS.md and the
// chart.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/fsd-launcher/fsd-launcher/bench"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
)

func main() {
	bench.MaybeServe() // server roles of this executable; returns otherwise
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "fsdbench: %+v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		quick     = flag.Bool("quick", false, "short smoke run: small sizes, short repetitions")
		targets   = flag.String("targets", strings.Join(bench.AllTargets, ","), "comma-separated targets")
		launcher  = flag.String("launcher", "bin/fsd-launcher", "fsd-launcher binary")
		diod      = flag.String("diod", "diod", "diod binary")
		out       = flag.String("out", "bench/out", "directory for results.json and bench.svg")
		md        = flag.String("benchmarks", "BENCHMARKS.md", "Markdown file whose results section is rewritten (\"\": none)")
		docsSVG   = flag.String("docs-svg", "docs/bench.svg", "copy of the chart that the README shows (\"\": none)")
		baseline  = flag.String("baseline", "", "results.json of an earlier run, shown as fsd's \"before\"")
		scratch   = flag.String("scratch", "", "parent of the scratch directory (default /dev/shm, else $TMPDIR)")
		serverCPU = flag.Int("server-cpu", 0, "CPU for the servers (-1: no pinning)")
		clientCPU = flag.Int("client-cpu", 1, "CPU for this client (-1: no pinning)")
		command   = flag.String("command", "", "command line to record (default: this one)")
		keep      = flag.Bool("keep", false, "keep the scratch directory (logs, sockets)")
		sandbox   = flag.String("fsd-sandbox", "", "fsd's sandbox key (none|chroot|namespace; default: absent, fsd's choice)")
		straceT   = flag.String("strace", "", "count this target's system calls with strace -c (profiling only)")
		only      = flag.String("workloads", "", "comma-separated workload IDs (default: all)")
		fsdprof   = flag.String("fsdprof", "bench/out/fsdprof", "fsdprof binary for the fsd-prof target")
		profDir   = flag.String("profile-dir", "bench/out/pprof", "where fsd-prof writes its profiles")
		verbose   = flag.Bool("v", false, "log progress to stderr")
		cpuProf   = flag.String("cpuprofile", "", "write the client's (this process's) CPU profile to this file")
	)
	flag.Parse()

	// Pin first: PinProcess re-executes this program on the client CPU.
	if *serverCPU != bench.NoPin && *clientCPU != bench.NoPin {
		if err := bench.PinProcess(*clientCPU); err != nil {
			return err
		}
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	if !*verbose {
		log.SetLevel(logrus.WarnLevel)
	}
	if *command == "" {
		*command = strings.Join(os.Args, " ")
	}
	p := bench.FullParams()
	if *quick {
		p = bench.QuickParams()
	}
	p.ServerCPU, p.ClientCPU = *serverCPU, *clientCPU
	if p.ServerCPU == bench.NoPin || p.ClientCPU == bench.NoPin {
		p.ServerCPU, p.ClientCPU = bench.NoPin, bench.NoPin
	}
	opts := []bench.Option{
		bench.WithTargets(strings.Split(*targets, ",")...),
		bench.WithLauncher(*launcher), bench.WithDiod(*diod),
		bench.WithCommand(*command),
		bench.WithLogger(log.WithField("subsystem", "bench")),
	}
	if *quick {
		opts = append(opts, bench.WithQuick())
	}
	opts = append(opts, bench.WithParams(p))
	if *scratch != "" {
		opts = append(opts, bench.WithScratchDir(*scratch))
	}
	if *keep {
		opts = append(opts, bench.WithKeepScratch())
	}
	if *sandbox != "" {
		opts = append(opts, bench.WithFsdSandbox(*sandbox))
	}
	if *straceT != "" {
		opts = append(opts, bench.WithStrace(*straceT))
	}
	if *only != "" {
		opts = append(opts, bench.WithWorkloads(strings.Split(*only, ",")...))
	}
	if abs, err := filepath.Abs(*profDir); err == nil {
		opts = append(opts, bench.WithFsdProf(*fsdprof, abs))
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return errors.Wrapf(err, "create %s", *cpuProf)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return errors.Wrap(err, "start CPU profile")
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.New(opts...).Run(ctx)
	if err != nil {
		return err
	}
	if *baseline != "" {
		if res.Baseline, err = bench.ReadJSON(*baseline); err != nil {
			return err
		}
	}
	if err := bench.WriteJSON(res, filepath.Join(*out, "results.json")); err != nil {
		return err
	}
	svg := []byte(bench.SVG(res))
	if err := bench.WriteFileAll(filepath.Join(*out, "bench.svg"), svg); err != nil {
		return err
	}
	chart := ""
	if *docsSVG != "" {
		if err := bench.WriteFileAll(*docsSVG, svg); err != nil {
			return err
		}
		chart = *docsSVG
	}
	if *md != "" {
		if err := bench.UpdateBenchmarks(res, *md, chart); err != nil {
			return err
		}
	}
	fmt.Println(bench.Markdown(res, ""))
	return nil
}
