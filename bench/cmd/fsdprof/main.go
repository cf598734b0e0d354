// Command fsdprof serves a directory with fsd's own 9P server loop
// (fsd/server) over its attach point (fsd/hostfs) in one process, under the
// Go profiler. The benchmark harness starts it as the "fsd-prof" target
// (bench/profile.sh): it inherits the listening socket as fd 3, serves
// until SIGTERM, then writes into -out a CPU profile (cpu.pprof), the
// allocation profile (allocs.pprof) and stats.json (allocations and GC
// cycles over its life), so that allocations per request and where the
// CPU goes can be read per workload. It is a measuring tool, not a daemon:
// no sandbox, no readiness line, no launcher.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"

	"github.com/fsd-launcher/fsd-launcher/fsd/hostfs"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// router serves one export at aname "" or "/", as fsd's does.
type router struct{ fs *hostfs.FS }

var _ server.Router = router{}

// Attach implements server.Router.Attach.
func (r router) Attach(aname string) (p9.File, error) {
	if aname != "" && aname != "/" {
		return nil, linux.ENOENT
	}
	return r.fs.Attach()
}

// sndbufListener sets SO_SNDBUFFORCE on the connections it accepts and
// returns them unwrapped (*net.UnixConn), so the server's I/O paths stay
// the same.
type sndbufListener struct {
	net.Listener
	size int
}

// Accept implements net.Listener.Accept.
func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, l.size)
			})
		}
	}
	return c, nil
}

// Stats is what stats.json holds.
type Stats struct {
	Mallocs    uint64 `json:"mallocs"`
	TotalAlloc uint64 `json:"total_alloc_bytes"`
	NumGC      uint32 `json:"num_gc"`
	PauseNs    uint64 `json:"gc_pause_ns"`
	MaxRSSKiB  int64  `json:"max_rss_kib"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "fsdprof: %+v\n", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory to serve")
	out := flag.String("out", "", "directory for cpu.pprof, allocs.pprof and stats.json")
	maxMsize := flag.Uint("max-msize", server.DefaultMaxMsize, "largest msize granted")
	flag.Parse()
	if *dir == "" || *out == "" {
		return errors.New("-dir and -out are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return errors.Wrapf(err, "mkdir %s", *out)
	}
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return errors.Wrap(err, "listener on fd 3")
	}
	fs, err := hostfs.New(*dir)
	if err != nil {
		l.Close()
		return err
	}
	defer fs.Close()
	pipes, err := server.NewPipePool(8, uint32(*maxMsize))
	if err != nil {
		l.Close()
		return err
	}
	defer pipes.Close()
	srv := server.New(router{fs}, server.WithMaxMsize(uint32(*maxMsize)), server.WithSendBuffer(true), server.WithPipePool(pipes))
	// FSDPROF_SNDBUF=N sets SO_SNDBUF(FORCE) on every accepted connection:
	// an experiment for the Rread path (a reply larger than the socket's
	// send buffer leaves in several writes, each a wake-up of the reader).
	if v := os.Getenv("FSDPROF_SNDBUF"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			l.Close()
			return errors.Errorf("bad FSDPROF_SNDBUF %q", v)
		}
		l = sndbufListener{Listener: l, size: n}
	}

	cpuPath := filepath.Join(*out, "cpu.pprof")
	cpu, err := os.Create(cpuPath)
	if err != nil {
		l.Close()
		return errors.Wrapf(err, "create %s", cpuPath)
	}
	defer cpu.Close()
	runtime.MemProfileRate = 4096 // finer than the default, for per-request counts
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// FSDPROF_CPU=0 leaves the CPU profiler off (its timer signals change
	// how the runtime schedules; compare with and without).
	profiling := os.Getenv("FSDPROF_CPU") != "0"
	if profiling {
		if err := pprof.StartCPUProfile(cpu); err != nil {
			l.Close()
			return errors.Wrap(err, "start CPU profile")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	serr := srv.Serve(ctx, l)
	if profiling {
		pprof.StopCPUProfile()
	}
	runtime.ReadMemStats(&after)

	allocPath := filepath.Join(*out, "allocs.pprof")
	af, err := os.Create(allocPath)
	if err != nil {
		return errors.Wrapf(err, "create %s", allocPath)
	}
	defer af.Close()
	if err := pprof.Lookup("allocs").WriteTo(af, 0); err != nil {
		return errors.Wrapf(err, "write %s", allocPath)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	st := Stats{Mallocs: after.Mallocs - before.Mallocs, TotalAlloc: after.TotalAlloc - before.TotalAlloc,
		NumGC: after.NumGC - before.NumGC, PauseNs: after.PauseTotalNs - before.PauseTotalNs, MaxRSSKiB: ru.Maxrss}
	b, _ := json.MarshalIndent(st, "", "  ")
	statsPath := filepath.Join(*out, "stats.json")
	if err := os.WriteFile(statsPath, append(b, '\n'), 0o644); err != nil {
		return errors.Wrapf(err, "write %s", statsPath)
	}
	return errors.Wrap(serr, "serve")
}
