package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/launcher"
)

const startHelp = `
Start the file daemon in the background and print one JSON line on stdout:
  {"pid":N,"socket":"PATH"}
The daemon gets its own session, writes its output to log_file (default
socket_path + ".log"), and outlives this command. Pass the PID and socket to
'fsd-launcher stop' and 'fsd-launcher status'.

On failure (invalid configuration, socket in use, the daemon exits or is not
ready within ready_timeout) the reason and the daemon's last output lines go
to stderr, the exit code is 1, and no daemon process and no socket are left.
SIGINT or SIGTERM during the start aborts it the same way.

With --bundle DIR the daemon serves an OCI bundle (DIR/config.json): the
bundle decides shared_dir (root.path), readonly (root.readonly) and the
mounts (each served bind mount, with its destination as tag); every other
key comes from --config when given, and --socket overrides socket_path.
Mounts that are not served are logged.`

func startMain(args []string) int {
	fs := newFlagSet("start", "--config FILE | --bundle DIR (--socket PATH | --config FILE)", startHelp)
	cfgPath := fs.String("config", "", "the configuration `FILE` (TOML; required unless --bundle and --socket are given)")
	bundle := fs.String("bundle", "", bundleFlagUsage)
	sockPath := fs.String("socket", "", "with --bundle: the socket `PATH`, overriding socket_path of --config")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case *bundle == "" && *cfgPath == "":
		return usageError(fs, "--config is required")
	case *bundle == "" && *sockPath != "":
		return usageError(fs, "--socket goes with --bundle (without it, socket_path comes from --config)")
	case *bundle != "" && *cfgPath == "" && *sockPath == "":
		return usageError(fs, "--bundle needs --socket or --config")
	}
	var cfg *config.Config
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return fail("start", err)
		}
	}
	log := newLogger(config.Log{})
	if cfg != nil {
		log = newLogger(cfg.Log)
	}
	if *bundle != "" {
		bcfg, unserved, err := bundleConfig(*bundle, *sockPath, cfg)
		if err != nil {
			return fail("start", err)
		}
		for _, u := range unserved {
			log.WithFields(logrus.Fields{"destination": u.Destination, "type": u.Type}).Info("mount not served: " + u.Reason)
		}
		cfg = bcfg
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := launcher.Start(ctx, cfg,
		launcher.Detached(),
		launcher.WithLogger(log),
		launcher.WithVersion(versionString()))
	if err != nil {
		return fail("start", err)
	}
	out := struct {
		PID    int    `json:"pid"`
		Socket string `json:"socket"`
	}{d.PID(), d.SocketPath()}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		// Nobody learns the PID: do not leave an unknown daemon behind.
		_ = d.Stop(context.Background())
		return fail("start", err)
	}
	return exitOK
}
