// Package server is fsd's 9P2000.L server: it accepts connections, keeps
// each connection's fid and tag tables, and dispatches requests to the
// p9.File values an attach point (Router) hands out.
//
// It replaces p9.NewServer, whose defects cannot be mended from the File
// side (see /work/shared/NOTES.md): here a client cannot crash the process,
// file modes reach the File with every bit the client sent, replies never
// exceed the negotiated msize, errnos are passed through unchanged, and no
// lock is shared between connections.
//
// Per connection, one reader goroutine decodes frames (fsd/proto) and hands
// each request to a worker goroutine (idle workers are kept and reused, a
// few per connection), up to a bound of requests in flight; at the bound
// the reader stops reading, so a client that pipelines without reading its
// replies only fills its own socket buffer. Replies are written whole, one
// write per reply, under a per-connection lock; with WithSendBuffer the
// socket's send buffer is grown after Tversion to hold a reply of msize
// bytes, so that a large Rread or Rreaddir leaves in a single write(2).
// Tflush never blocks a goroutine: the flush waits on the flushed request's
// entry and is answered right after that request's reply is written.
//
// Fids are reference counted: a request holds its File until it returns, so
// a concurrent Tclunk closes the File only after every request using it is
// done, and every File is closed exactly once, also when the connection ends.
package server

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
)

// Router resolves a Tattach's aname to the root File of an export.
type Router interface {
	// Attach returns a fresh File for the export named by aname, or an error
	// (linux.ENOENT for an unknown aname).
	Attach(aname string) (p9.File, error)
}

// Limits and defaults.
const (
	// MinMsize is the smallest msize a client may negotiate; a Tversion
	// below it closes the connection.
	MinMsize = 4096
	// DefaultMaxMsize is the default largest msize the server agrees to.
	DefaultMaxMsize = 1 << 20
	// MaxMsize is the largest msize WithMaxMsize accepts.
	MaxMsize = 4 << 20
	// DefaultMaxFids is the default number of fids one connection may hold.
	DefaultMaxFids = 65536
	// DefaultMaxConns is the default number of connections Serve serves at
	// once.
	DefaultMaxConns = 256
	// DefaultMaxInflight is the default number of requests one connection
	// may have in flight before the server stops reading from it.
	DefaultMaxInflight = 64
	// maxInflightLimit bounds WithMaxInflight: one request per tag.
	maxInflightLimit = 65535
	// xattrBudget bounds the extended-attribute bytes one connection may
	// hold in Txattrwalk and Txattrcreate fids at once.
	xattrBudget = 4 << 20
	// xattrMax is the largest attribute value or name list (Linux's
	// XATTR_SIZE_MAX and XATTR_LIST_MAX).
	xattrMax = 64 << 10
	// readBufferSize is the size of each connection's read buffer.
	readBufferSize = 32 << 10
)

// Server serves 9P2000.L connections. Its methods are safe for concurrent
// use.
type Server struct {
	router      Router
	log         *logrus.Entry
	maxMsize    uint32
	maxFids     int
	maxConns    int
	maxInflight int
	sendBuffer  bool
	pipes       *PipePool
	busyPoll    time.Duration
	poll        pollState

	nextConn atomic.Uint64
	conns    atomic.Int64
	fids     atomic.Int64
	inflight atomic.Int64
}

// Option configures a Server.
type Option func(*Server)

// WithLogger makes the server log through e (with field subsystem=server).
// The default logger discards everything.
func WithLogger(e *logrus.Entry) Option {
	return func(s *Server) {
		if e != nil {
			s.log = e.WithField("subsystem", "server")
		}
	}
}

// WithMaxMsize sets the largest msize the server agrees to (default
// DefaultMaxMsize), clamped to [MinMsize, MaxMsize].
func WithMaxMsize(n uint32) Option {
	return func(s *Server) {
		switch {
		case n == 0:
		case n < MinMsize:
			s.maxMsize = MinMsize
		case n > MaxMsize:
			s.maxMsize = MaxMsize
		default:
			s.maxMsize = n
		}
	}
}

// WithMaxFids sets how many fids one connection may hold (default
// DefaultMaxFids); walks and attaches past it fail with EMFILE. n <= 0 keeps
// the default.
func WithMaxFids(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.maxFids = n
		}
	}
}

// WithMaxConns sets how many connections Serve serves at once (default
// DefaultMaxConns); a connection past it is closed at once. n <= 0 keeps the
// default.
func WithMaxConns(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.maxConns = n
		}
	}
}

// WithMaxInflight sets how many requests one connection may have in flight
// (default DefaultMaxInflight, at most 65535); at the bound the server stops
// reading from the connection until a reply is written. n <= 0 keeps the
// default.
func WithMaxInflight(n int) Option {
	return func(s *Server) {
		switch {
		case n <= 0:
		case n > maxInflightLimit:
			s.maxInflight = maxInflightLimit
		default:
			s.maxInflight = n
		}
	}
}

// WithSendBuffer makes the server grow each connection's socket send
// buffer after Tversion to hold a reply of msize bytes (setsockopt
// SO_SNDBUFFORCE, else SO_SNDBUF up to net.core.wmem_max), so that a large
// Rread or Rreaddir leaves in one write(2) instead of one per
// default-sized buffer (212992 bytes), each waiting for the client to read
// and wake the server. Off by default: under a seccomp filter it needs
// getsockopt and setsockopt on SOL_SOCKET, and a refused call would be a
// policy violation; a failure is otherwise harmless (logged at debug level).
func WithSendBuffer(on bool) Option {
	return func(s *Server) { s.sendBuffer = on }
}

// WithPipePool makes Treads on Files that are FileSplicers splice their
// data through pp's pipes (see FileSplicer and PipePool): no copy of the
// data in the daemon. The caller closes pp after Serve returns. Under a
// seccomp filter it needs splice(2).
func WithPipePool(pp *PipePool) Option {
	return func(s *Server) { s.pipes = pp }
}

// quietLogger discards everything: libraries are quiet unless asked.
func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l).WithField("subsystem", "server")
}

// New returns a server that attaches through r.
func New(r Router, opts ...Option) *Server {
	s := &Server{
		router:      r,
		log:         quietLogger(),
		maxMsize:    DefaultMaxMsize,
		maxFids:     DefaultMaxFids,
		maxConns:    DefaultMaxConns,
		maxInflight: DefaultMaxInflight,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Stats is a snapshot of a server's load, for tests and monitoring.
type Stats struct {
	// Conns is the number of connections being served.
	Conns int64
	// Fids is the number of fids held across all connections.
	Fids int64
	// Inflight is the number of requests read and not yet answered.
	Inflight int64
}

// Stats returns the server's current load.
func (s *Server) Stats() Stats {
	return Stats{Conns: s.conns.Load(), Fids: s.fids.Load(), Inflight: s.inflight.Load()}
}

// ServeConn serves one connection until the client hangs up, breaks the
// protocol, or ctx is done. It closes conn, waits for the connection's
// requests, and closes every File its fids hold, before returning. It
// returns nil when the client hung up or ctx ended the connection, and an
// error satisfying errors.Is with ErrFrameTooLarge, ErrFrameTooSmall,
// ErrDuplicateTag, ErrMsizeTooSmall or ErrBadVersion when the client broke
// the protocol (ServeConn does not log those; Serve does, at warning
// level). Before Tversion, frames are bounded by MinMsize.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	c := newConn(s, conn)
	s.conns.Add(1)
	defer s.conns.Add(-1)
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()

	err := c.readLoop()
	// Stop writing to a client that stopped sending (or is being shut
	// down): pending replies fail fast instead of blocking on a peer that
	// may never read them.
	c.shutdown()
	c.inflight.Wait()
	c.stopWorkers()
	c.clunkAll()
	if err != nil && ctx.Err() == nil && !peerGone(err) {
		return err
	}
	return nil
}

// peerGone reports whether a read error only means the connection ended.
func peerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// Serve accepts connections on l and serves each in its own goroutine until
// ctx is done; then it stops accepting, closes every connection, waits for
// them to finish, and returns nil. A connection beyond the connection limit
// is closed at once. Serve closes l when it returns. It returns an error only
// when Accept fails with something other than a transient shortage.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()

	var (
		wg     sync.WaitGroup
		active atomic.Int64
		delay  time.Duration
	)
	// wg.Add runs only in this goroutine and wg.Wait only after the loop:
	// the two never race.
	defer wg.Wait()
	defer cancel()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if transientAcceptError(err) {
				delay = backoff(delay)
				s.log.WithError(err).Warnf("accept: retrying in %v", delay)
				select {
				case <-time.After(delay):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return errors.Wrapf(err, "accept on %s", l.Addr())
		}
		delay = 0
		if active.Load() >= int64(s.maxConns) {
			s.log.Warnf("connection limit %d reached: closing a new connection", s.maxConns)
			nc.Close()
			continue
		}
		active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			if err := s.ServeConn(ctx, nc); err != nil {
				s.log.WithError(err).Warn("closed a connection that broke the protocol")
			}
		}()
	}
}

// transientAcceptError reports a shortage Accept may recover from.
func transientAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	if d *= 2; d > time.Second {
		d = time.Second
	}
	return d
}
