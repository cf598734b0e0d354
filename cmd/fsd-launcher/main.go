// Command fsd-launcher starts, supervises and stops a 9P/virtio-fs file
// daemon for a VM-based container runtime, and is that daemon too (the
// `serve` subcommand).
//
// One binary, one subcommand per file, each a thin shell over the packages
// that do the work (config, launcher, fsd). Run `fsd-launcher --help` for
// the list, and `fsd-launcher SUBCOMMAND --help` for each one's flags.
//
// Exit codes: 0 success, 1 failure, 2 usage error (unknown subcommand or
// flag, missing or bad flag value). `status` exits 1 when the daemon is not
// alive and listening; `run` exits with the daemon's own status when the
// daemon dies by itself.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is shown.
var version string

// Exit codes, documented in --help.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const prog = "fsd-launcher"

// subcommand is one entry of the dispatch table.
type subcommand struct {
	name    string
	summary string
	run     func(args []string) int
}

// subcommands is the dispatch table, in the order --help lists it.
var subcommands []subcommand

func init() {
	// Filled in init, not at declaration: helpMain refers to the table.
	subcommands = []subcommand{
		{"start", "start the daemon in the background; print {\"pid\":N,\"socket\":\"PATH\"}", startMain},
		{"stop", "stop a daemon by PID and socket path (idempotent, never a reused PID)", stopMain},
		{"run", "start the daemon in the foreground until SIGINT/SIGTERM or its exit", runMain},
		{"status", "report whether a daemon is alive, listening and answering (JSON)", statusMain},
		{"check-config", "validate a configuration file", checkConfigMain},
		{"version", "print the version and the Go version", versionMain},
		{"demo", "one-command demo: serve a sample tree, use it over 9P, stop", demoMain},
		{"serve", "run the built-in 9P2000.L file daemon (the launcher starts it)", serveMain},
		{"help", "show this help, or a subcommand's: help SUBCOMMAND", helpMain},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

// dispatch runs the subcommand named by args[0] and returns the exit code.
func dispatch(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(os.Stdout)
		return exitOK
	}
	for _, c := range subcommands {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	if strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(os.Stderr, "%s: unknown flag %s (flags follow the subcommand)\n\n", prog, args[0])
	} else {
		fmt.Fprintf(os.Stderr, "%s: unknown subcommand %q\n\n", prog, args[0])
	}
	usage(os.Stderr)
	return exitUsage
}

// usage prints the top-level help.
func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s SUBCOMMAND [flags]\n\n", prog)
	fmt.Fprintln(w, "Starts, supervises and stops a file daemon for a VM (9P2000.L, or an")
	fmt.Fprintln(w, "external daemon such as virtiofsd), and is the built-in daemon itself.")
	fmt.Fprintln(w, "\nSubcommands:")
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s SUBCOMMAND --help' for a subcommand's flags.\n", prog)
	fmt.Fprint(w, exitCodesHelp)
}

const exitCodesHelp = `
Exit codes:
  0  success
  1  failure (the reason is on stderr)
  2  usage error: unknown subcommand or flag, missing or invalid flag value
`

func helpMain(args []string) int {
	if len(args) == 0 {
		usage(os.Stdout)
		return exitOK
	}
	for _, c := range subcommands {
		if c.name == args[0] && c.name != "help" {
			return c.run([]string{"--help"})
		}
	}
	fmt.Fprintf(os.Stderr, "%s help: unknown subcommand %q\n\n", prog, args[0])
	usage(os.Stderr)
	return exitUsage
}

// newFlagSet returns a flag set whose --help shows synopsis, what the
// subcommand does, its flags and the exit codes (on stdout), and whose
// usage errors show the synopsis only (on stderr).
func newFlagSet(name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(prog+" "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		w := fs.Output()
		if w != os.Stdout {
			// A usage error: the synopsis and where the rest is. The
			// whole help on stderr would bury the error, and for serve
			// it holds the readiness line's text, which a launcher
			// following the daemon's stderr must not see from a
			// daemon that refused its flags.
			fmt.Fprintf(w, "Usage: %s %s %s\nRun '%s %s --help' for more.\n", prog, name, synopsis, prog, name)
			return
		}
		fmt.Fprintf(w, "Usage: %s %s %s\n\n%s\n", prog, name, synopsis, strings.TrimSpace(description))
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(w, "\nFlags:")
			fs.PrintDefaults()
		}
		fmt.Fprint(w, exitCodesHelp)
	}
	return fs
}

// parseFlags parses args. It returns ok=false with the exit code to use
// when the subcommand must stop: --help (usage on stdout, 0) or a bad flag
// or a stray argument (usage on stderr, 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	// The flag package prints the usage itself on --help as well as on a
	// bad flag; collect what it prints and send it to the right stream once.
	var printed bytes.Buffer
	fs.SetOutput(&printed)
	err := fs.Parse(args)
	fs.SetOutput(os.Stderr)
	if err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			fs.SetOutput(os.Stderr)
			return exitOK, false
		}
		os.Stderr.Write(printed.Bytes()) // the error and the usage
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0)), false
	}
	return exitOK, true
}

// usageError prints a message and the usage on stderr and returns
// exitUsage.
func usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return exitUsage
}

// fail prints "fsd-launcher SUB: err" on stderr and returns exitFailure.
func fail(sub string, err error) int {
	fmt.Fprintf(os.Stderr, "%s %s: %v\n", prog, sub, err)
	return exitFailure
}

// newLogger returns a logrus entry writing to stderr with the level and
// format of the [log] table (defaults when empty).
func newLogger(lc config.Log) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	level, err := logrus.ParseLevel(lc.Level)
	if err != nil {
		level = logrus.InfoLevel
	}
	l.SetLevel(level)
	if lc.Format == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true})
	}
	return logrus.NewEntry(l)
}
