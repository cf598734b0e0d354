package main

import (
	"context"
	"path/filepath"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/launcher"
)

const stopHelp = `
Stop the daemon that 'fsd-launcher start' reported, then remove its socket
and state file (socket + ".state").

The PID is signalled only when it is provably the daemon: the state file's
PID and process start time match, or, without a state file, the PID holds
the socket's listening descriptor. Otherwise stop refuses (exit 1) and
signals nothing, so a reused PID is never killed. Signals go through a
pidfd: SIGTERM, then SIGKILL after --timeout.

Idempotent: a daemon that is already gone is not an error (exit 0); its
leftover socket and state file are removed. A path that is not a socket
(a file, a symlink) is reported and never removed or followed.`

func stopMain(args []string) int {
	fs := newFlagSet("stop", "--pid N --socket PATH [--timeout D]", stopHelp)
	pid := fs.Int("pid", 0, "the daemon's `PID` (required)")
	sock := fs.String("socket", "", "the daemon's socket `PATH` (required, absolute)")
	timeout := fs.Duration("timeout", config.DefaultStopTimeout, "how long to wait after SIGTERM before SIGKILL (a Go `duration`)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case *pid <= 0:
		return usageError(fs, "--pid must be a positive process ID")
	case *sock == "":
		return usageError(fs, "--socket is required")
	case !filepath.IsAbs(*sock):
		return usageError(fs, "--socket %q is not an absolute path", *sock)
	case *timeout <= 0:
		return usageError(fs, "--timeout must be positive")
	}
	log := newLogger(config.Log{Level: "warn"})
	err := launcher.StopByPID(context.Background(), *pid, *sock,
		launcher.WithStopTimeout(*timeout),
		launcher.WithStopLogger(log.WithField("cmd", "stop")))
	if errors.Is(err, launcher.ErrNotDaemon) {
		return fail("stop", errors.WithMessage(err, "refused, nothing was signalled"))
	}
	if err != nil {
		return fail("stop", err)
	}
	return exitOK
}
