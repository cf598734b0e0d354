// Package gofer serves an OCI bundle on already-connected sockets, one per
// export, the way runsc's gofer serves its --io-fds: the i-th connection
// serves the i-th export of oci.Bundle.Exports (the root first, then the
// served bind mounts in spec order), and nothing else. There is no
// listener: the daemon serves exactly these connections and is done when
// they have all closed.
//
// Each connection answers Tattach for aname "" and "/" and for its export's
// own tag with that export; any other aname is ENOENT. Exports whose
// oci.Export.ShareKey is equal (the mounts of one pod volume, see the pod
// mount hints in package oci) are served by one hostfs.FS: one set of
// pinned fds and one QID space across their connections.
//
// cmd/fsd-launcher's `serve --bundle DIR --io-fds 3,4,...` is a thin shell
// over Serve; launcher.StartGofer creates the socket pairs and starts it.
package gofer

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/fsd/hostfs"
	"github.com/fsd-launcher/fsd-launcher/fsd/sandbox"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
	"github.com/fsd-launcher/fsd-launcher/oci"
)

// CountError reports a number of connections (--io-fds) that does not
// match the number of exports of the bundle.
type CountError struct {
	// Bundle is the bundle directory.
	Bundle string
	// Exports is the number of exports (root + served bind mounts); FDs the
	// number of connections given.
	Exports, FDs int
}

// Error names both counts.
func (e *CountError) Error() string {
	return fmt.Sprintf("bundle %s has %d exports (the root and %d bind mounts) but %d io fds were given",
		e.Bundle, e.Exports, e.Exports-1, e.FDs)
}

// ErrBadFD reports an --io-fds value that cannot be used.
var ErrBadFD = errors.New("invalid io fd")

// Option configures Serve.
type Option func(*options)

type options struct {
	log        *logrus.Entry
	sandbox    *sandbox.Mode
	noFile     uint64
	serverOpts []server.Option
	ready      func()
}

// WithLogger sets the logger (default: discard). Serve adds
// subsystem=gofer.
func WithLogger(l *logrus.Entry) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithSandbox confines the process with package sandbox in mode m once the
// exports are open and before serving starts, with the bundle's root as
// the new "/". Without it Serve confines nothing: a daemon must ask for it
// (the serve command always does), a test in-process must not.
func WithSandbox(m sandbox.Mode) Option {
	return func(o *options) { o.sandbox = &m }
}

// WithNoFile sets the RLIMIT_NOFILE the sandbox raises the process to (see
// sandbox.Config.NoFile); zero leaves it alone.
func WithNoFile(n uint64) Option {
	return func(o *options) { o.noFile = n }
}

// WithServerOptions passes options (limits, logger) to every connection's
// server.
func WithServerOptions(opts ...server.Option) Option {
	return func(o *options) { o.serverOpts = append(o.serverOpts, opts...) }
}

// WithReady sets a function Serve calls once, when every connection is
// being served (the daemon prints its readiness line there).
func WithReady(f func()) Option {
	return func(o *options) { o.ready = f }
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// Serve serves b's exports on conns, conns[i] serving b.Exports()[i]. It
// returns when every connection has ended (the peer closed it, or it
// failed) or ctx is done, and closes every connection and export before it
// returns, on every path, so the caller hands conns over for good.
//
// A number of connections other than the number of exports is a
// *CountError, before anything is opened. Opening an export or applying
// the sandbox fails Serve before anything is served. Once serving, a
// connection that fails does not stop the others; the errors of all
// connections are returned together, each naming its export. A
// connection the peer closed is not an error.
func Serve(ctx context.Context, b *oci.Bundle, conns []net.Conn, opts ...Option) (err error) {
	defer closeConns(conns)
	o := &options{log: quietLogger()}
	for _, f := range opts {
		f(o)
	}
	log := o.log.WithFields(logrus.Fields{"subsystem": "gofer", "bundle": b.Dir})

	exports := b.Exports()
	if len(conns) != len(exports) {
		return &CountError{Bundle: b.Dir, Exports: len(exports), FDs: len(conns)}
	}

	// The sandbox's Prepare goes before the exports are opened, Apply after
	// (see package sandbox).
	var sb *sandbox.Sandbox
	if o.sandbox != nil {
		sb, err = sandbox.Prepare(sandbox.Config{
			Mode: *o.sandbox, Root: b.Root, ReadOnly: b.ReadOnly, NoFile: o.noFile, Logger: o.log,
		})
		if err != nil {
			return errors.WithMessage(err, "gofer: sandbox")
		}
	}
	fss, closeFSs, err := openExports(exports, sb, o.log)
	if err != nil {
		return err
	}
	defer closeFSs()
	if sb != nil {
		if err := sb.Apply(); err != nil {
			return errors.WithMessage(err, "gofer: sandbox")
		}
	}

	// ServeConn ends its connection when ctx is done, closes it, and
	// returns nil for a peer that hung up.
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		e := exports[i]
		srv := server.New(&router{tag: e.Tag, fs: fss[i]}, o.serverOpts...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ServeConn(ctx, c); err != nil {
				errs[i] = errors.WithMessagef(err, "connection %d (export %s)", i, e.Tag)
				log.WithError(err).WithField("export", e.Tag).Warn("connection failed")
			}
			log.WithField("export", e.Tag).Debug("connection ended")
		}()
	}
	log.WithField("exports", len(exports)).Info("serving bundle")
	if o.ready != nil {
		o.ready()
	}
	wg.Wait()
	return joinErrors(errs)
}

// openExports opens one hostfs.FS per attach point: exports with the same
// non-empty ShareKey share one. fss[i] serves exports[i]. The bind mounts
// are opened through sb (when not nil) so that in namespace mode each is a
// detached clone of its mount tree that the pivot leaves whole (see
// sandbox.Sandbox.OpenExport); the root is the mount that becomes "/". On
// error every FS opened so far is closed.
func openExports(exports []oci.Export, sb *sandbox.Sandbox, log *logrus.Entry) (fss []*hostfs.FS, closeAll func(), err error) {
	var opened []*hostfs.FS
	closeAll = func() {
		for _, fs := range opened {
			_ = fs.Close()
		}
	}
	shared := map[string]*hostfs.FS{}
	fss = make([]*hostfs.FS, len(exports))
	for i, e := range exports {
		if fs, ok := shared[e.ShareKey]; ok && e.ShareKey != "" {
			fss[i] = fs
			continue
		}
		hopts := []hostfs.Option{hostfs.WithLogger(log)}
		if e.ReadOnly {
			hopts = append(hopts, hostfs.ReadOnly())
		}
		if sb != nil && i > 0 {
			fd, err := sb.OpenExport(e.Source, e.ReadOnly)
			if err != nil {
				closeAll()
				return nil, nil, errors.WithMessagef(err, "gofer: export %s", e.Tag)
			}
			hopts = append(hopts, hostfs.WithRootFD(fd))
		}
		fs, err := hostfs.New(e.Source, hopts...)
		if err != nil {
			closeAll()
			return nil, nil, errors.WithMessagef(err, "gofer: export %s", e.Tag)
		}
		opened = append(opened, fs)
		if e.ShareKey != "" {
			shared[e.ShareKey] = fs
		}
		fss[i] = fs
	}
	return fss, closeAll, nil
}

// router is the server.Router of one connection: its export, under "",
// "/" and the export's tag.
type router struct {
	tag string
	fs  *hostfs.FS
}

var _ server.Router = (*router)(nil)

// Attach implements server.Router.Attach.
func (r *router) Attach(aname string) (p9.File, error) {
	if aname == "" || aname == oci.RootTag || aname == r.tag {
		return r.fs.Attach()
	}
	return nil, linux.ENOENT
}

// joinErrors joins the non-nil errors, or returns nil.
func joinErrors(errs []error) error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return joined(out)
}

// joined is several connection errors; errors.Is and errors.As see each.
type joined []error

func (j joined) Error() string {
	s := make([]string, len(j))
	for i, e := range j {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (j joined) Unwrap() []error { return j }

func closeConns(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// ParseFDs parses an --io-fds value: a comma-separated list of descriptor
// numbers, each at least 3 (0-2 are stdio) and none twice.
func ParseFDs(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.Wrap(ErrBadFD, "--io-fds is empty")
	}
	var fds []int
	seen := map[int]bool{}
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, errors.Wrapf(ErrBadFD, "--io-fds %q: %q is not a number", s, f)
		}
		if n < 3 {
			return nil, errors.Wrapf(ErrBadFD, "--io-fds %q: %d is stdin, stdout or stderr", s, n)
		}
		if seen[n] {
			return nil, errors.Wrapf(ErrBadFD, "--io-fds %q: %d given twice", s, n)
		}
		seen[n] = true
		fds = append(fds, n)
	}
	return fds, nil
}

// FileConns turns inherited descriptors into connections. Each must be a
// connected stream socket. The descriptors themselves are closed (the
// connections hold duplicates), on success and on error alike, so nothing
// inherited leaks; on error the connections made so far are closed too.
func FileConns(fds []int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, len(fds))
	var firstErr error
	for i, fd := range fds {
		c, err := fileConn(fd)
		if err != nil && firstErr == nil {
			firstErr = errors.WithMessagef(err, "io fd %d (--io-fds entry %d)", fd, i)
		}
		if c != nil {
			conns = append(conns, c)
		}
	}
	if firstErr != nil {
		closeConns(conns)
		return nil, firstErr
	}
	return conns, nil
}

// fileConn makes a connection of fd and closes fd.
func fileConn(fd int) (net.Conn, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, errors.Wrapf(ErrBadFD, "fstat: %v", err)
	}
	f := os.NewFile(uintptr(fd), "io-fd-"+strconv.Itoa(fd))
	defer f.Close()
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, errors.Wrapf(ErrBadFD, "not a socket (mode %#o)", st.Mode&unix.S_IFMT)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, errors.Wrap(err, "getsockopt SO_TYPE")
	}
	if typ != unix.SOCK_STREAM {
		return nil, errors.Wrapf(ErrBadFD, "socket type %d, want SOCK_STREAM", typ)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, errors.Wrap(err, "net.FileConn")
	}
	return c, nil
}
