package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/fsd"
	"github.com/fsd-launcher/fsd-launcher/fsd/sandbox"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
	"github.com/fsd-launcher/fsd-launcher/socket"
)

const serveHelp = `
Run the built-in 9P2000.L file daemon. The launcher starts it with the
listening socket it pre-opened as descriptor 3 (--fd 3); by hand,
--socket-path creates the socket (mode 0600, removed again on exit).

Exports are reached by the attach name (aname): "" and "/" are
--shared-dir, each --mount's tag is that mount, anything else does not
exist (ENOENT). Paths may be relative; they are made absolute.

Once it accepts connections it prints one line on stderr:
  fsd: ready pid=N exports=/:DIR[,TAG:DIR]...   ("[ro]" after read-only ones)
It serves any number of connections (up to --max-connections at once);
one ending never stops it. SIGTERM or SIGINT stops accepting, closes every
connection and exits 0.

Gofer mode serves an OCI bundle on already-connected sockets instead:
  serve --bundle DIR --io-fds FDS [--sandbox M] [--max-fids N]
        [--max-inflight N] [--max-msize N] [--busy-poll D] [--log-level L]
        [--log-format F]
It exits 0 once every connection has closed.`

// mountFlag collects repeated --mount tag=T,source=S[,ro][,share=G] values.
type mountFlag []fsd.Export

var _ flag.Value = (*mountFlag)(nil)

// String implements flag.Value.String.
func (m *mountFlag) String() string {
	if m == nil {
		return ""
	}
	var parts []string
	for _, e := range *m {
		s := "tag=" + e.Tag + ",source=" + e.Source
		if e.ReadOnly {
			s += ",ro"
		}
		if e.Share != "" {
			s += ",share=" + e.Share
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// Set implements flag.Value.Set: it parses one tag=T,source=S[,ro][,share=G].
func (m *mountFlag) Set(v string) error {
	var e fsd.Export
	var haveTag, haveSource bool
	for _, part := range strings.Split(v, ",") {
		key, val, hasVal := strings.Cut(part, "=")
		switch {
		case key == "tag" && hasVal && !haveTag:
			e.Tag, haveTag = val, true
		case key == "source" && hasVal && !haveSource:
			e.Source, haveSource = val, true
		case key == "ro" && !hasVal && !e.ReadOnly:
			e.ReadOnly = true
		case key == "share" && hasVal && val != "" && e.Share == "":
			e.Share = val
		default:
			return errors.Errorf("%q: want tag=T,source=S[,ro][,share=G] (unexpected %q)", v, part)
		}
	}
	if !haveTag || !haveSource {
		return errors.Errorf("%q: want tag=T,source=S[,ro][,share=G] (tag and source are required)", v)
	}
	if err := fsd.CheckTag(e.Tag); err != nil {
		return errors.Errorf("%q: tag %q %v", v, e.Tag, err)
	}
	if e.Source == "" {
		return errors.Errorf("%q: empty source", v)
	}
	for _, o := range *m {
		if o.Tag == e.Tag {
			return errors.Errorf("%q: tag %q is already used by source %s", v, e.Tag, o.Source)
		}
	}
	*m = append(*m, e)
	return nil
}

// serveFlags are the serve subcommand's flags.
type serveFlags struct {
	fd                           int
	socketPath, sharedDir        string
	readOnly, noSetuid           bool
	mounts                       mountFlag
	logLevel, logFormat, sandbox string
	maxConns, maxFids            int
	maxInflight                  int
	maxMsize                     uint
	busyPoll                     time.Duration
	bundle, ioFDs                string
	set                          map[string]bool // flags given on the command line
}

func serveMain(args []string) int {
	fs := newFlagSet("serve", "(--fd N | --socket-path PATH) --shared-dir DIR [flags]", serveHelp)
	var f serveFlags
	fs.IntVar(&f.fd, "fd", 0, "serve the listening unix socket inherited as descriptor `N` (3 or more; the launcher passes 3)")
	fs.StringVar(&f.socketPath, "socket-path", "", "create and serve a unix socket at `PATH` (mode 0600, removed on exit)")
	fs.StringVar(&f.sharedDir, "shared-dir", "", "the root export `DIR`, aname \"\" and \"/\" (required)")
	fs.BoolVar(&f.readOnly, "readonly", false, "make the root export read-only (mutations answer EROFS)")
	fs.BoolVar(&f.noSetuid, "no-setuid", false, "strip setuid and setgid from every mode the guest sets, in every export (setgid stays on directories)")
	fs.Var(&f.mounts, "mount", "another export, `tag=T,source=DIR[,ro][,share=G]`, reached by aname T (repeatable); mounts with the same share group G are served by one attach point")
	fs.StringVar(&f.logLevel, "log-level", config.DefaultLogLevel, "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", config.DefaultLogFormat, "log `FORMAT`: text or json")
	fs.StringVar(&f.sandbox, "sandbox", "", "confinement `MODE`: namespace, chroot or none (default: the strongest that works here)")
	fs.IntVar(&f.maxConns, "max-connections", 0, fmt.Sprintf("serve at most `N` connections at once; more are closed at once (default %d)", server.DefaultMaxConns))
	fs.IntVar(&f.maxFids, "max-fids", 0, fmt.Sprintf("allow at most `N` fids per connection (default %d)", server.DefaultMaxFids))
	fs.IntVar(&f.maxInflight, "max-inflight", 0, fmt.Sprintf("stop reading a connection with `N` requests in flight (default %d)", server.DefaultMaxInflight))
	fs.UintVar(&f.maxMsize, "max-msize", 0, fmt.Sprintf("largest 9P message size agreed to, `BYTES` in [%d, %d] (default %d)", server.MinMsize, server.MaxMsize, server.DefaultMaxMsize))
	fs.DurationVar(&f.busyPoll, "busy-poll", server.DefaultBusyPoll, fmt.Sprintf("poll a connection's socket for up to `DURATION` before waiting for its next request (backs off on a connection whose requests come slower; 0 turns polling off; at most %v)", server.MaxBusyPoll))
	fs.StringVar(&f.bundle, "bundle", "", bundleFlagUsage)
	fs.StringVar(&f.ioFDs, "io-fds", "", ioFDsFlagUsage)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if msg := f.check(); msg != "" {
		return usageError(fs, "%s", msg)
	}

	log := newLogger(config.Log{Level: f.logLevel, Format: f.logFormat})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if f.set["bundle"] || f.set["io-fds"] {
		return serveBundle(ctx, bundleServe{
			Bundle:      f.bundle,
			IOFDs:       f.ioFDs,
			Sandbox:     f.sandbox,
			MaxFids:     f.maxFids,
			MaxInflight: f.maxInflight,
			MaxMsize:    uint32(f.maxMsize),
			BusyPoll:    f.busyPoll,
			Log:         log,
			Stderr:      os.Stderr,
		})
	}
	return f.serve(ctx, log)
}

// check validates the flags together and returns the usage error, naming
// the flag, or "".
func (f *serveFlags) check() string {
	if _, err := logrus.ParseLevel(f.logLevel); err != nil || strings.EqualFold(f.logLevel, "trace") || strings.EqualFold(f.logLevel, "panic") || strings.EqualFold(f.logLevel, "fatal") {
		return fmt.Sprintf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return fmt.Sprintf("--log-format %q: want text or json", f.logFormat)
	}
	if _, err := sandbox.ParseMode(f.sandbox); err != nil {
		return fmt.Sprintf("--sandbox %q: want namespace, chroot or none", f.sandbox)
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"max-connections", f.maxConns}, {"max-fids", f.maxFids}, {"max-inflight", f.maxInflight}} {
		if l.v < 0 || f.set[l.name] && l.v == 0 {
			return fmt.Sprintf("--%s %d: want a positive number", l.name, l.v)
		}
	}
	if f.maxInflight > 65535 {
		return fmt.Sprintf("--max-inflight %d: at most 65535 (one request per tag)", f.maxInflight)
	}
	if f.set["max-msize"] && (f.maxMsize < server.MinMsize || f.maxMsize > server.MaxMsize) {
		return fmt.Sprintf("--max-msize %d: want %d to %d", f.maxMsize, server.MinMsize, server.MaxMsize)
	}
	if f.busyPoll < 0 || f.busyPoll > server.MaxBusyPoll {
		return fmt.Sprintf("--busy-poll %v: want 0 (off) to %v", f.busyPoll, server.MaxBusyPoll)
	}
	if f.set["bundle"] || f.set["io-fds"] {
		for _, name := range []string{"fd", "socket-path", "shared-dir", "readonly", "no-setuid", "mount", "max-connections"} {
			if f.set[name] {
				return fmt.Sprintf("--%s cannot be used with --bundle/--io-fds (gofer mode)", name)
			}
		}
		return "" // serveBundle checks --bundle and --io-fds
	}
	switch {
	case f.set["fd"] && f.set["socket-path"]:
		return "--fd and --socket-path are exclusive"
	case !f.set["fd"] && !f.set["socket-path"]:
		return "one of --fd or --socket-path is required"
	case f.set["fd"] && f.fd < 3:
		return fmt.Sprintf("--fd %d: want an inherited descriptor, 3 or more", f.fd)
	case f.set["socket-path"] && f.socketPath == "":
		return "--socket-path is empty"
	case f.sharedDir == "":
		return "--shared-dir is required"
	}
	return ""
}

// serve runs the daemon on --fd or --socket-path until ctx is done.
func (f *serveFlags) serve(ctx context.Context, log *logrus.Entry) int {
	exports := []fsd.Export{{Source: f.sharedDir, ReadOnly: f.readOnly}}
	exports = append(exports, f.mounts...)
	for i := range exports {
		abs, err := filepath.Abs(exports[i].Source)
		if err != nil {
			return fail("serve", errors.Wrapf(err, "export %q", exports[i].Source))
		}
		exports[i].Source = abs
	}

	var l net.Listener
	if f.set["fd"] {
		ul, err := socket.FromFD(uintptr(f.fd), "--fd "+strconv.Itoa(f.fd))
		if err != nil {
			return fail("serve", err)
		}
		l = ul
	} else {
		ul, err := socket.Listen(f.socketPath, 0o600)
		if err != nil {
			return fail("serve", errors.WithMessage(err, "--socket-path"))
		}
		sf, err := pinSocket(f.socketPath)
		if err != nil {
			ul.Close()
			_ = socket.Remove(f.socketPath)
			return fail("serve", errors.WithMessage(err, "--socket-path"))
		}
		l = ul
		defer func() {
			if err := sf.remove(); err != nil {
				log.WithError(err).Warn("removing the socket")
			}
		}()
	}

	err := fsd.Serve(ctx, fsd.Options{
		Listener:    l,
		Exports:     exports,
		Logger:      log,
		MaxConns:    f.maxConns,
		MaxFids:     f.maxFids,
		MaxInflight: f.maxInflight,
		MaxMsize:    uint32(f.maxMsize),
		Sandbox:     f.sandbox,
		NoSetuid:    f.noSetuid,
		BusyPoll:    f.busyPoll,
		Ready:       os.Stderr,
	})
	if err != nil {
		return fail("serve", err)
	}
	return exitOK
}

// socketFile is the socket file --socket-path created, held through a
// descriptor on its directory: the sandbox makes the path unreachable (a
// pivot or chroot into the export), and the file must still be removed on
// exit.
type socketFile struct {
	dir      int
	name     string
	dev, ino uint64
}

// pinSocket opens path's directory and notes which file the socket is.
func pinSocket(path string) (*socketFile, error) {
	dirName, name := filepath.Split(filepath.Clean(path))
	if dirName == "" {
		dirName = "."
	}
	dir, err := unix.Open(dirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "open the directory of socket %s", path)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		unix.Close(dir)
		return nil, errors.Wrapf(err, "stat socket %s", path)
	}
	return &socketFile{dir: dir, name: name, dev: st.Dev, ino: st.Ino}, nil
}

// remove unlinks the socket file if it is still the one pinSocket saw (a
// socket another daemon put there since is left alone), and closes the
// directory descriptor.
func (s *socketFile) remove() error {
	defer unix.Close(s.dir)
	var st unix.Stat_t
	err := unix.Fstatat(s.dir, s.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return errors.Wrapf(err, "stat socket %s", s.name)
	case st.Dev != s.dev || st.Ino != s.ino || st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return nil
	}
	if err := unix.Unlinkat(s.dir, s.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return errors.Wrapf(err, "remove socket %s", s.name)
	}
	return nil
}
