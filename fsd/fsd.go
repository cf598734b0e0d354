// Package fsd is the 9P2000.L file daemon: it opens one hostfs export per
// shared directory, confines itself (package sandbox), serves every
// connection accepted on a listener with fsd's own server (fsd/server), and
// prints its readiness line once it is accepting.
//
// Exports are reached by Tattach's aname: "" and "/" are the root export,
// a mount's tag is that mount, anything else is ENOENT. Nothing is
// synthesized in the root's namespace, so no tag can shadow a real file.
package fsd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/fsd/hostfs"
	"github.com/fsd-launcher/fsd-launcher/fsd/sandbox"
	"github.com/fsd-launcher/fsd-launcher/fsd/server"
)

// SplicePipes is how many Treads, across connections, splice at once (see
// server.PipePool); more are copied through buffers.
const SplicePipes = 8

// ReadyLine starts the line the daemon prints on stderr once it accepts
// connections; the launcher waits for it.
const ReadyLine = "fsd: ready"

// RootTag is the aname of the root export besides "".
const RootTag = "/"

// ErrInvalidOptions is wrapped by every error Serve returns for options it
// refuses before opening anything; the message names the field.
var ErrInvalidOptions = errors.New("fsd: invalid options")

// Export is one shared directory.
type Export struct {
	// Tag is the aname that reaches the export; "" is the root export,
	// which "" and "/" reach.
	Tag string
	// Source is the host directory.
	Source string
	// ReadOnly makes every mutation answer EROFS.
	ReadOnly bool
	// Share, when not empty, names a share group: the tagged exports of
	// one group are served by one attach point (one pinned root fd, one
	// QID space), as a pod volume is (see oci's mount hints). Exports of a
	// group must have the same Source and ReadOnly.
	Share string
}

// Options configures Serve.
type Options struct {
	// Listener is where connections come from; Serve closes it.
	Listener net.Listener
	// Exports are the shared directories: exactly one root export (Tag
	// "") and any number of tagged ones, tags unique.
	Exports []Export
	// Logger receives the daemon's log; nil discards it. Serve adds
	// subsystem=fsd.
	Logger *logrus.Entry
	// MaxConns, MaxFids and MaxInflight are the server's limits (see
	// package server); 0 keeps the server's default.
	MaxConns, MaxFids, MaxInflight int
	// MaxMsize is the largest msize the server agrees to; 0 keeps the
	// default (server.DefaultMaxMsize).
	MaxMsize uint32
	// Sandbox is the confinement mode (package sandbox): "namespace",
	// "chroot", "none", or "" for the strongest that works here. Sandboxing
	// changes the whole process (root directory, credentials, seccomp):
	// callers that are not the daemon process itself, tests for instance,
	// pass "none".
	Sandbox string
	// NoSetuid strips setuid and setgid from every mode the guest sets, in
	// every export (hostfs.NoSetuid).
	NoSetuid bool
	// BusyPoll is how long a connection's reader may poll its socket
	// before it waits for the next request (server.WithBusyPoll); 0 turns
	// polling off. The daemon serves with server.DefaultBusyPoll.
	BusyPoll time.Duration
	// Ready receives the readiness line; nil means os.Stderr.
	Ready io.Writer
}

// maxNoFile caps the RLIMIT_NOFILE the daemon asks for: the kernel's
// default fs.nr_open.
const maxNoFile = 1 << 20

// NoFileLimit is the RLIMIT_NOFILE a daemon with these limits may need:
// one host fd per fid on every connection, plus slack, capped at 1 Mi.
// Zero limits count as the server's defaults.
func NoFileLimit(maxFids, maxConns int) uint64 {
	if maxFids <= 0 {
		maxFids = server.DefaultMaxFids
	}
	if maxConns <= 0 {
		maxConns = server.DefaultMaxConns
	}
	n := uint64(maxFids)*uint64(maxConns) + 256
	return min(n, maxNoFile)
}

// validate checks opts before anything is opened and returns the root
// export.
func (o *Options) validate() (Export, sandbox.Mode, error) {
	if o.Listener == nil {
		return Export{}, "", errors.Wrap(ErrInvalidOptions, "Listener is nil")
	}
	mode, err := sandbox.ParseMode(o.Sandbox)
	if err != nil {
		return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Sandbox: %v", err)
	}
	var root *Export
	seen := map[string]bool{}
	groups := map[string]*Export{}
	for i := range o.Exports {
		e := &o.Exports[i]
		if e.Source == "" {
			return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Exports[%d] (tag %q): empty Source", i, e.Tag)
		}
		if e.Tag == "" {
			if root != nil {
				return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Exports[%d]: a second root export (%s and %s)", i, root.Source, e.Source)
			}
			root = e
			continue
		}
		if err := CheckTag(e.Tag); err != nil {
			return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Exports[%d]: tag %q %v", i, e.Tag, err)
		}
		if seen[e.Tag] {
			return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Exports[%d]: tag %q used twice", i, e.Tag)
		}
		seen[e.Tag] = true
		if e.Share == "" {
			continue
		}
		if first, ok := groups[e.Share]; ok && (first.Source != e.Source || first.ReadOnly != e.ReadOnly) {
			return Export{}, "", errors.Wrapf(ErrInvalidOptions, "Exports[%d] (tag %q): share group %q already serves %s (read-only %v), not %s (read-only %v)",
				i, e.Tag, e.Share, first.Source, first.ReadOnly, e.Source, e.ReadOnly)
		} else if !ok {
			groups[e.Share] = e
		}
	}
	if root == nil {
		return Export{}, "", errors.Wrap(ErrInvalidOptions, "no root export (an Export with Tag \"\")")
	}
	if o.BusyPoll < 0 || o.BusyPoll > server.MaxBusyPoll {
		return Export{}, "", errors.Wrapf(ErrInvalidOptions, "BusyPoll %v: want 0 (off) to %v", o.BusyPoll, server.MaxBusyPoll)
	}
	if o.MaxConns < 0 || o.MaxFids < 0 || o.MaxInflight < 0 {
		return Export{}, "", errors.Wrapf(ErrInvalidOptions, "negative limit (MaxConns %d, MaxFids %d, MaxInflight %d)", o.MaxConns, o.MaxFids, o.MaxInflight)
	}
	if o.MaxMsize != 0 && (o.MaxMsize < server.MinMsize || o.MaxMsize > server.MaxMsize) {
		return Export{}, "", errors.Wrapf(ErrInvalidOptions, "MaxMsize %d outside [%d, %d]", o.MaxMsize, server.MinMsize, server.MaxMsize)
	}
	return *root, mode, nil
}

// CheckTag reports whether tag can name a mount: not empty, not "/" (the
// root's aname), not "." or "..", no NUL, no control characters. A tag may
// contain '/': an OCI bundle's bind mounts are exported under their
// destination ("/data"), and the router matches anames exactly, so "/data"
// and "/data/sub" are two exports and neither shadows a file of the other.
// The error says what is wrong, without the tag.
func CheckTag(tag string) error {
	switch {
	case tag == "":
		return errors.New("is empty")
	case tag == RootTag:
		return errors.New("is the root export's aname")
	case tag == "." || tag == "..":
		return errors.New("is not a name")
	case strings.ContainsRune(tag, 0):
		return errors.New("contains NUL")
	}
	for _, r := range tag {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

// router resolves anames to exports.
type router struct {
	root *hostfs.FS
	tags map[string]*hostfs.FS
}

var _ server.Router = (*router)(nil)

// Attach implements server.Router.Attach.
func (r *router) Attach(aname string) (p9.File, error) {
	if aname == "" || aname == RootTag {
		return r.root.Attach()
	}
	if fs, ok := r.tags[aname]; ok {
		return fs.Attach()
	}
	return nil, linux.ENOENT
}

// Serve runs the daemon until ctx is done: it validates opts, prepares the
// sandbox, opens the exports (the extra ones through
// sandbox.Sandbox.OpenExport), applies the sandbox (umask 0 included, in
// every mode, so modes land exactly as the guest sends them), prints the
// readiness line, and serves. A connection that ends never stops it. When
// ctx is done it stops accepting, closes every connection, closes the
// exports and returns nil. It closes opts.Listener on every path.
func Serve(ctx context.Context, opts Options) (err error) {
	if opts.Listener != nil {
		defer opts.Listener.Close()
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	log = log.WithField("subsystem", "fsd")
	root, mode, err := opts.validate()
	if err != nil {
		return err
	}

	// The sandbox's Prepare goes before the exports are opened, Apply after
	// them and before serving (see package sandbox).
	sb, err := sandbox.Prepare(sandbox.Config{
		Mode:     mode,
		Root:     root.Source,
		ReadOnly: root.ReadOnly,
		NoFile:   NoFileLimit(opts.MaxFids, opts.MaxConns),
		Logger:   log,
	})
	if err != nil {
		return errors.WithMessage(err, "fsd: sandbox")
	}
	r := &router{tags: map[string]*hostfs.FS{}}
	var opened []*hostfs.FS
	defer func() {
		for _, fs := range opened {
			if cerr := fs.Close(); cerr != nil {
				log.WithError(cerr).Warn("closing an export")
			}
		}
	}()
	shared := map[string]*hostfs.FS{} // by share group
	for _, e := range opts.Exports {
		if fs, ok := shared[e.Share]; ok && e.Tag != "" {
			r.tags[e.Tag] = fs // one attach point for the whole group
			continue
		}
		hopts := []hostfs.Option{hostfs.WithLogger(log)}
		if e.ReadOnly {
			hopts = append(hopts, hostfs.ReadOnly())
		}
		if opts.NoSetuid {
			hopts = append(hopts, hostfs.NoSetuid())
		}
		if e.Tag != "" {
			// An extra export: in namespace mode a detached clone of
			// its mount tree, which the pivot leaves whole (see
			// sandbox.Sandbox.OpenExport). The root export is opened
			// by path: it is the mount that becomes "/".
			fd, err := sb.OpenExport(e.Source, e.ReadOnly)
			if err != nil {
				return errors.WithMessagef(err, "fsd: export %s", exportName(e))
			}
			hopts = append(hopts, hostfs.WithRootFD(fd))
		}
		fs, err := hostfs.New(e.Source, hopts...)
		if err != nil {
			return errors.WithMessagef(err, "fsd: export %s", exportName(e))
		}
		opened = append(opened, fs)
		if e.Tag == "" {
			r.root = fs
		} else {
			r.tags[e.Tag] = fs
			if e.Share != "" {
				shared[e.Share] = fs
			}
		}
	}
	// The pipes Treads splice through are made before the sandbox: no
	// pipe2 under the filter, and room for a whole msize read while
	// CAP_SYS_RESOURCE lets a pipe outgrow fs.pipe-max-size.
	msize := opts.MaxMsize
	if msize == 0 {
		msize = server.DefaultMaxMsize
	}
	pipes, err := server.NewPipePool(SplicePipes, msize)
	if err != nil {
		log.WithError(err).Warn("no pipes for spliced reads: reads are copied")
	}
	defer pipes.Close()
	if err := sb.Apply(); err != nil {
		return errors.WithMessage(err, "fsd: sandbox")
	}

	var sopts []server.Option
	// A large Rread or Rreaddir leaves in one write: the filter allows
	// SO_SNDBUF (see sandbox.Filter).
	sopts = append(sopts, server.WithLogger(log), server.WithSendBuffer(true), server.WithBusyPoll(opts.BusyPoll))
	if pipes != nil {
		sopts = append(sopts, server.WithPipePool(pipes))
	}
	if opts.MaxConns > 0 {
		sopts = append(sopts, server.WithMaxConns(opts.MaxConns))
	}
	if opts.MaxFids > 0 {
		sopts = append(sopts, server.WithMaxFids(opts.MaxFids))
	}
	if opts.MaxInflight > 0 {
		sopts = append(sopts, server.WithMaxInflight(opts.MaxInflight))
	}
	if opts.MaxMsize > 0 {
		sopts = append(sopts, server.WithMaxMsize(opts.MaxMsize))
	}
	srv := server.New(r, sopts...)

	ready := opts.Ready
	if ready == nil {
		ready = os.Stderr
	}
	line := fmt.Sprintf("%s pid=%d exports=%s", ReadyLine, sb.PID(), describe(opts.Exports))
	log.WithFields(logrus.Fields{"sandbox": string(sb.Mode()), "listener": opts.Listener.Addr().String()}).Info("serving")
	if _, err := fmt.Fprintln(ready, line); err != nil {
		return errors.Wrap(err, "fsd: print the readiness line")
	}
	if err := srv.Serve(ctx, opts.Listener); err != nil {
		return errors.WithMessage(err, "fsd")
	}
	log.Info("stopped")
	return nil
}

// exportName names an export in messages: its tag, or "/" for the root.
func exportName(e Export) string {
	if e.Tag == "" {
		return RootTag
	}
	return e.Tag
}

// describe lists the exports for the readiness line: the root first, then
// the tags in order, each as NAME:DIR with "[ro]" after a read-only one.
func describe(exports []Export) string {
	parts := make([]string, 0, len(exports))
	add := func(e Export) {
		s := exportName(e) + ":" + e.Source
		if e.ReadOnly {
			s += "[ro]"
		}
		parts = append(parts, s)
	}
	for _, e := range exports {
		if e.Tag == "" {
			add(e)
		}
	}
	for _, e := range exports {
		if e.Tag != "" {
			add(e)
		}
	}
	return strings.Join(parts, ",")
}
