package launcher

import (
	"io"
	"runtime/debug"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/ext"
	otlog "github.com/opentracing/opentracing-go/log"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// Option configures Start.
type Option func(*options)

type options struct {
	log        *logrus.Entry
	tracer     opentracing.Tracer
	executable string
	detached   bool
	version    string
	// poll is how often the detached launcher looks at the daemon's log
	// file when inotify cannot tell it about writes (readiness.Follow).
	poll time.Duration
}

// WithLogger sets the logger (default: one that discards everything). The
// launcher adds the field subsystem=launcher; in attached mode every line
// the daemon writes is logged at info level with the field daemon=PID.
func WithLogger(l *logrus.Entry) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithTracer sets the opentracing tracer (default: opentracing.GlobalTracer()
// at the time of the call, a no-op unless the program installed one).
func WithTracer(t opentracing.Tracer) Option {
	return func(o *options) {
		if t != nil {
			o.tracer = t
		}
	}
}

// WithExecutable sets the binary started for the built-in daemon (default
// os.Executable(), i.e. this fsd-launcher binary). It is started as
//
//	PATH serve --fd 3 --shared-dir D [--readonly] [--mount tag=T,source=S[,ro]]...
//	    --log-level L --log-format F [--sandbox M] [--max-connections N]
//	    [--max-fids N] [--max-inflight N] [--max-msize N] DAEMON.ARGS...
//
// It has no effect when the configuration names an external daemon.
func WithExecutable(path string) Option {
	return func(o *options) { o.executable = path }
}

// Detached starts the daemon for `fsd-launcher start`: in a session of its
// own (setsid, so the launcher's terminal and process group do not reach
// it), with stdout and stderr appended to cfg.LogFilePath() (created 0600),
// and without a parent-death signal, so it outlives the launcher. Readiness
// is read by following the log file from the offset it had before the
// daemon started, so lines of an earlier run never match.
func Detached() Option {
	return func(o *options) { o.detached = true }
}

// WithVersion sets the launcher version recorded in the state file
// (default: the main module version from the build info).
func WithVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// StopOption configures StopByPID.
type StopOption func(*stopOptions)

type stopOptions struct {
	timeout time.Duration
	log     *logrus.Entry
	tracer  opentracing.Tracer
}

// WithStopTimeout sets how long StopByPID waits after SIGTERM before it
// sends SIGKILL (default config.DefaultStopTimeout).
func WithStopTimeout(d time.Duration) StopOption {
	return func(o *stopOptions) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithStopLogger sets StopByPID's logger (default: discard).
func WithStopLogger(l *logrus.Entry) StopOption {
	return func(o *stopOptions) {
		if l != nil {
			o.log = l
		}
	}
}

// WithStopTracer sets StopByPID's tracer (default opentracing.GlobalTracer()).
func WithStopTracer(t opentracing.Tracer) StopOption {
	return func(o *stopOptions) {
		if t != nil {
			o.tracer = t
		}
	}
}

const subsystem = "launcher"

// quietLogger is the default logger: it discards everything.
func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func newOptions(opts []Option) *options {
	o := &options{poll: 20 * time.Millisecond}
	for _, f := range opts {
		f(o)
	}
	if o.log == nil {
		o.log = quietLogger()
	}
	o.log = o.log.WithField("subsystem", subsystem)
	if o.tracer == nil {
		o.tracer = opentracing.GlobalTracer()
	}
	if o.version == "" {
		o.version = buildVersion()
	}
	return o
}

func newStopOptions(opts []StopOption) *stopOptions {
	o := &stopOptions{timeout: config.DefaultStopTimeout}
	for _, f := range opts {
		f(o)
	}
	if o.log == nil {
		o.log = quietLogger()
	}
	o.log = o.log.WithField("subsystem", subsystem)
	if o.tracer == nil {
		o.tracer = opentracing.GlobalTracer()
	}
	return o
}

// buildVersion is the main module's version from the build info.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(unknown)"
}

// startSpan starts a span named name tagged subsystem=launcher, as a child
// of parent when there is one.
func startSpan(t opentracing.Tracer, name string, parent opentracing.Span) opentracing.Span {
	var so []opentracing.StartSpanOption
	if parent != nil {
		so = append(so, opentracing.ChildOf(parent.Context()))
	}
	so = append(so, opentracing.Tag{Key: "subsystem", Value: subsystem})
	return t.StartSpan(name, so...)
}

// finishSpan marks the span failed when err is set, then finishes it.
func finishSpan(s opentracing.Span, err error) {
	if err != nil {
		ext.Error.Set(s, true)
		s.LogFields(otlog.Error(err))
	}
	s.Finish()
}
