package launcher

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/opentracing/opentracing-go"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/oci"
	"github.com/fsd-launcher/fsd-launcher/readiness"
)

// ErrGoferDetached reports the Detached option given to StartGofer: the
// caller holds the sandbox ends and the Daemon, so a gofer is always
// attached to it.
var ErrGoferDetached = errors.New("launcher: a gofer cannot be detached")

// StartGofer starts the built-in daemon as a gofer for the OCI bundle at
// bundleDir, the way runsc's createGoferProcess starts its gofer: one
// socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC) per export of the bundle
// (oci.Bundle.Exports: the root, then the served bind mounts in spec
// order), the gofer ends handed to the daemon as fd 3, 4, ... (ExtraFiles)
// and closed in the parent once it started, and the sandbox ends returned
// in export order: sandboxEnds[i] is a connected socket serving export i
// (give it to the guest's 9P client, e.g. net.FileConn). The daemon runs
//
//	EXECUTABLE serve --bundle DIR --io-fds 3,4,... --log-level L --log-format text
//
// (sandbox "auto", started in a mount namespace of its own when the
// launcher runs as root, as Start does). StartGofer waits for its
// readiness line like Start, up to config.DefaultReadyTimeout or ctx; on
// any failure the daemon is killed and reaped, every socket end is closed,
// and the error is returned (a *StartError once the daemon had started).
//
// There is no socket path and no state file: the caller holds the Daemon
// (Daemon.SocketPath is empty). The daemon exits 0 by itself once every
// sandbox end is closed; Stop ends it sooner. Options: WithLogger,
// WithTracer, WithExecutable, WithVersion; Detached is refused with
// ErrGoferDetached.
func StartGofer(ctx context.Context, bundleDir string, opts ...Option) (_ *Daemon, sandboxEnds []*os.File, err error) {
	o := newOptions(opts)
	span := startSpan(o.tracer, "launcher.start_gofer", opentracing.SpanFromContext(ctx))
	defer func() { finishSpan(span, err) }()
	if o.detached {
		return nil, nil, ErrGoferDetached
	}
	b, err := oci.LoadBundle(bundleDir)
	if err != nil {
		return nil, nil, errors.WithMessage(err, "launcher: gofer")
	}
	span.SetTag("bundle", b.Dir)
	for _, u := range b.Unserved() {
		o.log.WithFields(logrus.Fields{"bundle": b.Dir, "destination": u.Destination, "type": u.Type}).Debug("mount not served: " + u.Reason)
	}

	// The gofer has no configuration file: defaults, the built-in daemon,
	// sandbox auto.
	c := config.Config{SharedDir: b.Root, ReadOnly: b.ReadOnly}
	applyDefaults(&c)
	c.Log.Level = daemonLevel(o.log.Logger.GetLevel())
	path := o.executable
	if path == "" {
		if path, err = os.Executable(); err != nil {
			return nil, nil, errors.Wrap(err, "launcher: find the built-in daemon (os.Executable)")
		}
	}

	n := len(b.Exports())
	sandEnds := make([]*os.File, 0, n)
	goferEnds := make([]*os.File, 0, n)
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			_ = f.Close()
		}
	}
	// The gofer ends are the daemon's once it started: the parent's copies
	// go on every path. The sandbox ends are the caller's on success only.
	defer func() { closeAll(goferEnds) }()
	defer func() {
		if err != nil {
			closeAll(sandEnds)
		}
	}()
	ioFDs := make([]string, 0, n)
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, errors.Wrapf(err, "launcher: socketpair for export %d of bundle %s", i, b.Dir)
		}
		sandEnds = append(sandEnds, os.NewFile(uintptr(fds[0]), "gofer sandbox end "+strconv.Itoa(i)))
		goferEnds = append(goferEnds, os.NewFile(uintptr(fds[1]), "gofer io fd "+strconv.Itoa(i)))
		ioFDs = append(ioFDs, strconv.Itoa(3+i))
	}
	args := []string{"serve", "--bundle", b.Dir, "--io-fds", strings.Join(ioFDs, ","),
		"--log-level", c.Log.Level, "--log-format", c.Log.Format}

	d := &Daemon{
		cfg:        c,
		path:       path,
		builtin:    true,
		log:        o.log.WithField("bundle", b.Dir),
		tracer:     o.tracer,
		done:       make(chan struct{}),
		outputDone: make(chan struct{}),
	}
	out, err := newOutput(&c, false)
	if err != nil {
		return nil, nil, err
	}
	if err := closeExecFrom(3); err != nil {
		out.abort()
		return nil, nil, errors.WithMessage(err, "launcher: mark descriptors close-on-exec")
	}
	cmd, err := startDaemonCmd(&c, d.log, func() *exec.Cmd {
		cmd := exec.Command(path, args...)
		cmd.Stdout = out.w
		cmd.Stderr = out.w
		cmd.ExtraFiles = goferEnds // fd 3, 4, ...
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		return cmd
	})
	_ = out.w.Close()
	if err != nil {
		out.abort()
		return nil, nil, err
	}
	closeAll(goferEnds)
	goferEnds = nil
	d.cmd = cmd
	d.pid = cmd.Process.Pid
	span.SetTag("pid", d.pid)
	d.log = d.log.WithField("pid", d.pid)
	if ps, perr := readProcStat(d.pid); perr == nil {
		d.startTime = ps.StartTime
	} else {
		err = perr
	}
	register(d)
	go d.reap()
	d.log.WithField("args", args).Debugf("started gofer %s", path)

	w := out.watch(d, fsdReadyLine, o.poll)
	if err == nil {
		rspan := startSpan(o.tracer, "launcher.ready", span)
		rspan.SetTag("pid", d.pid)
		err = readiness.Wait(ctx, w, d.done, c.ReadyTimeout.D())
		finishSpan(rspan, err)
	}
	if err != nil {
		return nil, nil, d.abortStart(err, span, out, w)
	}
	out.ready(d, w)
	d.log.WithField("exports", n).Info("gofer ready")
	return d, sandEnds, nil
}

// daemonLevel maps the launcher's log level to the daemon's --log-level
// (debug, info, warn, error).
func daemonLevel(l logrus.Level) string {
	switch {
	case l >= logrus.DebugLevel:
		return "debug"
	case l == logrus.InfoLevel:
		return "info"
	case l == logrus.WarnLevel:
		return "warn"
	}
	return "error"
}
