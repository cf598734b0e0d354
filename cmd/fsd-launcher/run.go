package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/launcher"
)

const runHelp = `
Start the file daemon and stay in the foreground. The daemon's output goes
through this process's log (stderr, level and format from [log]); the daemon
gets SIGTERM if this process dies, even by SIGKILL.

SIGINT or SIGTERM stops the daemon (SIGTERM, SIGKILL after stop_timeout),
removes the socket and state file, and exits 0. If the daemon exits by
itself, the socket and state file are removed and run exits with the
daemon's status: its exit code, or 128 + the signal that killed it.`

func runMain(args []string) int {
	fs := newFlagSet("run", "--config FILE", runHelp)
	cfgPath := fs.String("config", "", "the configuration `FILE` (TOML, required)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *cfgPath == "" {
		return usageError(fs, "--config is required")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fail("run", err)
	}
	log := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := launcher.Start(ctx, cfg, launcher.WithLogger(log), launcher.WithVersion(versionString()))
	if err != nil {
		if ctx.Err() != nil {
			// Asked to stop while starting: Start killed the daemon and
			// cleaned up, which is what was asked.
			log.WithError(err).Info("interrupted before the daemon was ready")
			return exitOK
		}
		return fail("run", err)
	}
	log = log.WithFields(logrus.Fields{"pid": d.PID(), "socket": d.SocketPath()})
	select {
	case <-ctx.Done():
		log.Info("signal received; stopping the daemon")
		if err := d.Stop(context.Background()); err != nil {
			return fail("run", err)
		}
		return exitOK
	case <-d.Done():
	}
	werr := d.Wait()
	if err := d.Stop(context.Background()); err != nil { // the socket and state file
		log.WithError(err).Error("cleanup after the daemon's exit")
	}
	if werr == nil {
		log.Warn("the daemon exited with status 0")
		return exitOK
	}
	log.WithError(werr).Error("the daemon exited")
	var ee *launcher.ExitError
	if errors.As(werr, &ee) {
		return ee.ExitCode()
	}
	return exitFailure
}
