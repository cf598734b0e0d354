package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/fsd-launcher/fsd-launcher/launcher"
)

const statusHelp = `
Report on a daemon without changing anything, as one JSON object on stdout:
  pid, socket
  alive             the process exists and is the daemon (state file start
                    time matches, or it holds the listening socket)
  identity_ok       that identity check alone
  socket_listening  something listens on the socket (read from the kernel's
                    socket table; no connection is made)
  answers           the built-in daemon answered a 9P version exchange;
                    null for an external daemon, which is never connected
                    to (virtiofsd serves a single connection)
  detail            why something is false

Exit code 0 when alive and socket_listening are both true, 1 otherwise.`

func statusMain(args []string) int {
	fs := newFlagSet("status", "--pid N --socket PATH", statusHelp)
	pid := fs.Int("pid", 0, "the daemon's `PID` (required)")
	sock := fs.String("socket", "", "the daemon's socket `PATH` (required, absolute)")
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
	}
	si, err := launcher.Status(context.Background(), *pid, *sock)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(si); err != nil {
		return fail("status", err)
	}
	if si.Alive && si.SocketListening {
		return exitOK
	}
	return exitFailure
}
