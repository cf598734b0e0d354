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
	// DefaultReadyLine is the built-in daemon's readiness text (the
	// value of fsd.ReadyLine): key "daemon.ready_line" defaults to it
	// when daemon.path is empty.
	DefaultReadyLine = "fsd: ready"
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
	// NoSetuid makes the built-in daemon strip setuid and setgid from every
	// mode the guest sets, in every export (key "no_setuid"; see
	// hostfs.NoSetuid). Use it when host users who are not root can reach
	// the shared directories.
	NoSetuid bool `toml:"no_setuid"`
	// BusyPoll is how long the built-in daemon polls a busy connection's
	// socket before it waits for the next request (key "busy_poll", a
	// duration string up to MaxBusyPoll; "0s" turns polling off; absent:
	// the daemon's default, 50µs). Polling spends CPU time of busy
	// connections to cut the latency of each request; the window adapts,
	// so an idle connection does not poll.
	BusyPoll *Duration `toml:"busy_poll"`

	Daemon Daemon  `toml:"daemon"`
	Log    Log     `toml:"log"`
	Limits Limits  `toml:"limits"`
	Mounts []Mount `toml:"mount"`

	// index and source locate keys in the file Parse read, for errors.
	index  *keyIndex
	source string
}

// Daemon selects the daemon the launcher starts (table "[daemon]").
type Daemon struct {
	// Path is another daemon binary to launch instead of the built-in one
	// (key "daemon.path"; absolute). Empty means `fsd-launcher serve`.
	Path string `toml:"path"`
	// Args are extra arguments (key "daemon.args"). For an external daemon
	// they are the whole argument list, with placeholders filled in (see
	// Expand); a list without placeholders is passed exactly as written.
	// For the built-in daemon they are appended, placeholders filled in,
	// after the serve flags the launcher generates.
	Args []string `toml:"args"`
	// ReadyLine is the text on the daemon's stderr that marks readiness (key
	// "daemon.ready_line"). Required for an external daemon; defaults to
	// fsd's own line for the built-in one.
	ReadyLine string `toml:"ready_line"`
}

// Log configures logging (table "[log]"): the launcher's and the built-in
// daemon's.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error (key "log.level", default info)
	Format string `toml:"format"` // text|json (key "log.format", default text)
}

// Limits bounds what one daemon may use (table "[limits]"); zero means the
// daemon's default. They apply to the built-in daemon only.
type Limits struct {
	MaxConnections int    `toml:"max_connections"`
	MaxFids        int    `toml:"max_fids"`     // per connection
	MaxInflight    int    `toml:"max_inflight"` // requests per connection
	MaxMsize       uint32 `toml:"max_msize"`    // bytes
}

// Mount is an extra export (array of tables "[[mount]]", built-in daemon
// only); the guest attaches it with aname equal to Tag.
type Mount struct {
	Tag      string `toml:"tag"`
	Source   string `toml:"source"`
	ReadOnly bool   `toml:"readonly"`
	// Share names a share group (key "share"): mounts with the same
	// non-empty group are served by one attach point of the built-in
	// daemon, as a pod volume is; they must have the same source and
	// readonly. Empty (the default): the mount is its own attach point.
	Share string `toml:"share"`
}

// FileMode is a permission value read from an integer (0o600) or an octal
// string ("0600").
type FileMode uint32

// Duration is a time.Duration read from a Go duration string ("5s").
type Duration time.Duration

// Default returns a configuration with every default applied, serving
// sharedDir at socketPath with the built-in daemon. It is not validated.
func Default(sharedDir, socketPath string) *Config {
	return &Config{
		SocketPath:   socketPath,
		SocketMode:   DefaultSocketMode,
		SharedDir:    sharedDir,
		ReadyTimeout: Duration(DefaultReadyTimeout),
		StopTimeout:  Duration(DefaultStopTimeout),
		Daemon:       Daemon{ReadyLine: DefaultReadyLine},
		Log:          Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
}

// LogFilePath returns where the detached daemon's output goes: LogFile, or
// SocketPath + ".log" when it is empty.
func (c *Config) LogFilePath() string {
	if c.LogFile != "" {
		return c.LogFile
	}
	return c.SocketPath + ".log"
}

// IsBuiltinDaemon reports whether the launcher runs its own daemon
// (`fsd-launcher serve`) rather than daemon.path.
func (c *Config) IsBuiltinDaemon() bool { return c.Daemon.Path == "" }
