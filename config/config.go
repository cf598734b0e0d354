// Package config reads and validates the launcher's TOML configuration.
//
// The key names below are the project's contract with its users: they are
// documented in the README and in testdata/example.toml, and every error
// names the offending key (and the line, where the TOML parser gives one).
// Validation happens before anything is started.
package config

import (
	"time"
)

// Defaults applied by Parse when a key is absent.
const (
	DefaultSocketMode   = 0o600
	DefaultReadyTimeout = 5 * time.Second
	DefaultStopTimeout  = 5 * time.Second
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
)

// Sandbox modes for the built-in daemon (key "sandbox").
const (
	SandboxAuto      = ""          // the strongest mode that works on this host
	SandboxNamespace = "namespace" // own mount namespace, pivot_root
	SandboxChroot    = "chroot"    // chroot only
	SandboxNone      = "none"      // no confinement (the only mode when not root)
)

// Config is a parsed, validated launcher configuration.
type Config struct {
	// SocketPath is the unix socket the launcher pre-opens (key
	// "socket_path", required, absolute).
	SocketPath string `toml:"socket_path"`
	// SocketMode is the permission of the socket file (key "socket_mode",
	// default 0600; an integer such as 0o600 or a string such as "0600").
	SocketMode FileMode `toml:"socket_mode"`
	// SharedDir is the root export, attached with aname "" or "/" (key
	// "shared_dir", required, absolute, an existing directory).
	SharedDir string `toml:"shared_dir"`
	// ReadOnly makes the root export read-only (key "readonly").
	ReadOnly bool `toml:"readonly"`
	// ReadyTimeout bounds the wait for the daemon's readiness line (key
	// "ready_timeout", a Go duration string, default 5s).
	ReadyTimeout Duration `toml:"ready_timeout"`
	// StopTimeout is how long stop waits after SIGTERM before SIGKILL (key
	// "stop_timeout", default 5s).
	StopTimeout Duration `toml:"stop_timeout"`
	// LogFile receives the daemon's stdout and stderr after `start` detaches
	// it (key "log_file", default SocketPath + ".log").
	LogFile string `toml:"log_file"`
	// Sandbox selects the built-in daemon's confinement (key "sandbox":
	// "namespace", "chroot", "none"; empty picks the strongest that works).
	Sandbox string `toml:"sandbox"`

	Daemon Daemon  `toml:"daemon"`
	Log    Log     `toml:"log"`
	Limits Limits  `toml:"limits"`
	Mounts []Mount `toml:"mount"`
}

// Daemon selects the daemon the launcher starts (table "[daemon]").
type Daemon struct {
	// Path is another daemon binary to launch instead of the built-in one
	// (key "daemon.path"; absolute). Empty means `fsd-launcher serve`.
	Path string `toml:"path"`
	// Args are extra arguments (key "daemon.args"). For an external daemon
	// they are the whole argument list, with placeholders filled in (see
	// Expand); a list without placeholders is passed exactly as written.
	Args []string `toml:"args"`
	// ReadyLine is the text on the daemon's stderr that marks readiness (key
	// "daemon.ready_line"). Required for an external daemon; defaults to
	// fsd's own line for the built-in one.
	ReadyLine string `toml:"ready_line"`
}

// Log configures logging (table "[log]").
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error
	Format string `toml:"format"` // text|json
}

// Limits bounds what one daemon may use (table "[limits]"); zero means the
// daemon's default.
type Limits struct {
	MaxConnections int    `toml:"max_connections"`
	MaxFids        int    `toml:"max_fids"`     // per connection
	MaxInflight    int    `toml:"max_inflight"` // requests per connection
	MaxMsize       uint32 `toml:"max_msize"`    // bytes
}

// Mount is an extra export (array of tables "[[mount]]"); the guest attaches
// it with aname equal to Tag.
type Mount struct {
	Tag      string `toml:"tag"`
	Source   string `toml:"source"`
	ReadOnly bool   `toml:"readonly"`
}

// FileMode is a permission value read from an integer (0o600) or an octal
// string ("0600").
type FileMode uint32

// Duration is a time.Duration read from a Go duration string ("5s").
type Duration time.Duration
