package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/fsd/sandbox"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
	"github.com/fsd-launcher/fsd-launcher/oci"
	"github.com/fsd-launcher/fsd-launcher/oci/gofer"
)

// Bundle mode: `start --bundle DIR` and `serve --bundle DIR --io-fds ...`
// (see oci/README.md). start.go and serve.go register the flags and call
// bundleConfig and serveBundle.

// Flag help texts, for start.go and serve.go.
const (
	bundleFlagUsage = "serve the OCI bundle in `DIR` (its config.json): root.path as aname /, " +
		"each bind mount as aname = its destination; with start, the bundle decides shared_dir, readonly and the mounts"
	ioFDsFlagUsage = "gofer mode (with --bundle): serve one export on each of these already-connected " +
		"socket `FDS` (comma-separated), the root first, then the bind mounts in spec order"
)

// bundleConfig returns the launcher configuration of `start --bundle DIR`.
// base is the configuration read from --config (nil without it): its keys
// apply, except that the bundle decides shared_dir, readonly and the
// mounts. socketPath is --socket: when not empty it overrides base's
// socket_path. Without --config the configuration is config.Default's.
// It also returns the bundle's unserved mounts, for the caller to log.
func bundleConfig(bundleDir, socketPath string, base *config.Config) (*config.Config, []oci.Unserved, error) {
	b, err := oci.LoadBundle(bundleDir)
	if err != nil {
		return nil, nil, err
	}
	if base == nil {
		if socketPath == "" {
			return nil, nil, errors.New("start --bundle: the socket path comes from --socket or --config")
		}
		base = config.Default(b.Root, socketPath)
	} else if socketPath != "" {
		c := *base
		c.SocketPath = socketPath
		base = &c
	}
	cfg, err := b.Config(base)
	if err != nil {
		return nil, nil, err
	}
	return cfg, b.Unserved(), nil
}

// bundleServe holds what `serve --bundle DIR --io-fds FDS` was given.
type bundleServe struct {
	// Bundle is --bundle and IOFDs is --io-fds, unparsed.
	Bundle, IOFDs string
	// Sandbox is --sandbox ("" = auto).
	Sandbox string
	// MaxFids, MaxInflight and MaxMsize are --max-fids, --max-inflight and
	// --max-msize, per connection; 0 keeps the server's default.
	MaxFids, MaxInflight int
	MaxMsize             uint32
	// BusyPoll is --busy-poll (server.WithBusyPoll).
	BusyPoll time.Duration
	// Log is the daemon's logger; nil discards.
	Log *logrus.Entry
	// Stderr receives the readiness line.
	Stderr io.Writer
}

// serveBundle runs `serve --bundle DIR --io-fds FDS`: the gofer mode. Each
// descriptor is an already-connected socket serving one export of the
// bundle; there is no listener. It prints fsd.ReadyLine on a.Stderr once
// every connection is being served and returns the exit status: 0 once
// every connection has closed or on SIGTERM/SIGINT, exitUsage for bad
// flags, 1 for anything else (a count of descriptors that does not match
// the bundle's exports among them; the message names both counts).
func serveBundle(ctx context.Context, a bundleServe) int {
	log := a.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	if a.Stderr == nil {
		a.Stderr = os.Stderr
	}
	if a.Bundle == "" || a.IOFDs == "" {
		log.Error("serve: --bundle and --io-fds go together")
		return exitUsage
	}
	fds, err := gofer.ParseFDs(a.IOFDs)
	if err != nil {
		log.WithError(err).Error("serve")
		return exitUsage
	}
	mode, err := sandbox.ParseMode(a.Sandbox)
	if err != nil {
		log.WithError(err).Error("serve")
		return exitUsage
	}
	// Take the descriptors first, so they are closed however this ends.
	conns, err := gofer.FileConns(fds)
	if err != nil {
		log.WithError(err).Error("serve")
		return exitFailure
	}
	b, err := oci.LoadBundle(a.Bundle)
	if err != nil {
		for _, c := range conns {
			_ = c.Close()
		}
		log.WithError(err).Error("serve")
		return exitFailure
	}
	for _, u := range b.Unserved() {
		log.WithFields(logrus.Fields{"destination": u.Destination, "type": u.Type}).Info("mount not served: " + u.Reason)
	}

	sopts := []server.Option{server.WithLogger(log), server.WithSendBuffer(true), server.WithBusyPoll(a.BusyPoll)}
	if a.MaxFids > 0 {
		sopts = append(sopts, server.WithMaxFids(a.MaxFids))
	}
	if a.MaxInflight > 0 {
		sopts = append(sopts, server.WithMaxInflight(a.MaxInflight))
	}
	msize := uint32(server.DefaultMaxMsize)
	if a.MaxMsize > 0 {
		sopts = append(sopts, server.WithMaxMsize(a.MaxMsize))
		msize = a.MaxMsize
	}
	// Spliced reads, through pipes made before the sandbox (no pipe2
	// under the seccomp filter).
	if pipes, err := server.NewPipePool(fsd.SplicePipes, msize); err != nil {
		log.WithError(err).Warn("no pipes for spliced reads: reads are copied")
	} else {
		defer pipes.Close()
		sopts = append(sopts, server.WithPipePool(pipes))
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pid := sandbox.LauncherPID() // before the sandbox mounts its own /proc
	err = gofer.Serve(ctx, b, conns,
		gofer.WithLogger(log),
		gofer.WithSandbox(mode),
		gofer.WithNoFile(fsd.NoFileLimit(a.MaxFids, len(conns))),
		gofer.WithServerOptions(sopts...),
		gofer.WithReady(func() {
			fmt.Fprintf(a.Stderr, "%s pid=%d bundle=%s io-fds=%s\n", fsd.ReadyLine, pid, b.Dir, a.IOFDs)
		}),
	)
	if err != nil {
		log.WithError(err).Error("serve")
		return exitFailure
	}
	if ctx.Err() != nil {
		log.Info("stopped by a signal")
	} else {
		log.Info("every connection closed")
	}
	return exitOK
}
