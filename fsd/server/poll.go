package server

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Busy polling (WithBusyPoll).
//
// A 9P client sends its next request soon after it reads a reply: a Twalk's
// Rwalk is followed by the Tclunk, a Tlcreate's Rlcreate by the Tclunk of
// the new file. A reader that parks in the netpoller as soon as the socket is
// empty lets the CPU go idle, and in a virtual machine an idle CPU halts:
// waking it for the next request costs more than the request itself (on the
// 2-vCPU machines of BENCHMARKS.md, a getattr round trip took 71 µs parked
// and 35 µs polling). So before parking, the reader keeps trying the socket
// for a short window, yielding to the connection's workers between tries,
// the way QEMU's iothreads poll (poll-max-ns) and Linux's busy_read does.
//
// The window counts from the later of the moment the socket was found empty
// and the connection's last reply: while a request is being handled the
// reader may find the socket empty long before the client can answer, and
// it is the client's turnaround, after the reply, that polling must cover.
//
// Polling backs off per connection when it does not pay: after missPolls
// polls in a row that ended without a request (a client slower than the
// window, or idle), the next requests are waited for without polling, first
// minSkip of them, twice as many after each further run of misses, up to
// maxSkip. A poll that catches a request resets the back-off. A connection
// that goes idle so spends missPolls windows of CPU time; a busy one polls.
// (A time-based rule, QEMU's, grows the window when a wait was short, but
// a wait measured after parking includes the wake-up it means to avoid,
// which here exceeds the window itself: the window never grew.)

const (
	// DefaultBusyPoll is the busy-poll maximum fsd serves with.
	DefaultBusyPoll = 50 * time.Microsecond
	// MaxBusyPoll bounds WithBusyPoll.
	MaxBusyPoll = time.Millisecond
	// missPolls, minSkip and maxSkip shape the back-off (see above).
	missPolls = 4
	minSkip   = 8
	maxSkip   = 1024
)

// WithBusyPoll makes each connection's reader poll its socket for up to max
// before it parks waiting for the next request (see above); 0, the
// default, turns polling off. max is clamped to MaxBusyPoll. Polling trades
// CPU time of a busy connection for latency.
func WithBusyPoll(d time.Duration) Option {
	return func(s *Server) {
		s.busyPoll = min(max(d, 0), MaxBusyPoll)
	}
}

// pollState is what a server's connections share about polling.
//
// One connection polls at a time, and only while it is the only one with
// requests: a polling goroutine is always runnable, and the Go scheduler
// looks for ready sockets only when nothing is runnable (with GOMAXPROCS 1,
// as on a daemon pinned to one CPU), so while it polls the other
// connections' requests wait, up to a window each. With several busy
// connections the CPU does not idle between requests anyway.
type pollState struct {
	polling atomic.Bool
	// last is the connection that read the latest frame, switched when a
	// frame came from another one than the frame before (monotonic).
	last     atomic.Uint64
	switched atomic.Int64
}

// soloQuiet is how long no other connection may have sent a frame before a
// connection polls.
const soloQuiet = time.Millisecond

// frame records that connection id read a frame.
func (s *pollState) frame(id uint64) {
	if s.last.Load() != id && s.last.Swap(id) != id {
		s.switched.Store(monotonic())
	}
}

// enter reports whether the caller may poll now; if so it must call exit
// when it stops.
func (s *pollState) enter() bool {
	if monotonic()-s.switched.Load() < int64(soloQuiet) {
		return false
	}
	return s.polling.CompareAndSwap(false, true)
}

func (s *pollState) exit() { s.polling.Store(false) }

// pollReader is a connection's byte source (under its bufio.Reader).
type pollReader struct {
	nc net.Conn
	rc syscall.RawConn // nil: no polling
	// window is how long to poll. misses, skip and backoff change only in
	// the connection's reader goroutine: polls in a row that caught
	// nothing, empty reads left to wait for without polling, and the skip
	// of the next back-off.
	window                time.Duration
	misses, skip, backoff int
	shared                *pollState
	// replied is when the connection last wrote a reply (see monotonic).
	replied atomic.Int64

	// The state of one Read, kept here so that the callback handed to
	// rc.Read (made once, in tryFn) allocates nothing.
	tryFn   func(fd uintptr) bool
	buf     []byte
	n       int
	errno   error
	start   int64 // when the socket was first found empty (monotonic)
	tries   int   // reads that found the socket empty
	polling bool  // this reader holds the poll token and polls
	polled  bool  // the window is spent, or polling was skipped
}

// pollEpoch is the origin of monotonic.
var pollEpoch = time.Now()

// monotonic is the time since pollEpoch, in nanoseconds.
func monotonic() int64 { return int64(time.Since(pollEpoch)) }

// noteReply records that a reply was written (any goroutine).
func (p *pollReader) noteReply() {
	if p.rc != nil {
		p.replied.Store(monotonic())
	}
}

// since is how long ago the later of start and the last reply was.
func (p *pollReader) since(start int64) time.Duration {
	now := monotonic()
	return time.Duration(now - max(start, p.replied.Load()))
}

// newPollReader reads nc through rc (nc's raw access, nil when nc is no
// socket), polling up to limit (0: never).
func newPollReader(nc net.Conn, rc syscall.RawConn, limit time.Duration, shared *pollState) *pollReader {
	p := &pollReader{nc: nc, window: limit, backoff: minSkip, shared: shared}
	if limit > 0 && rc != nil {
		p.rc = rc
		p.tryFn = p.try
	}
	return p
}

// Read reads what the socket holds, polling for up to the window when it
// holds nothing, then waiting in the netpoller.
func (p *pollReader) Read(b []byte) (int, error) {
	if p.rc == nil || len(b) == 0 {
		return p.nc.Read(b)
	}
	p.buf, p.n, p.errno, p.tries, p.polled = b, 0, nil, 0, false
	err := p.rc.Read(p.tryFn)
	p.buf = nil
	if p.polling {
		// Polling caught the data.
		p.polling = false
		p.shared.exit()
		p.misses, p.backoff = 0, minSkip
	}
	switch {
	case err != nil:
		return 0, err
	case p.errno != nil:
		return 0, &net.OpError{Op: "read", Net: "unix", Err: p.errno}
	case p.n == 0:
		return 0, io.EOF
	}
	return p.n, nil
}

// try is rc.Read's callback: it reads, and polls while the window lasts;
// false lets the netpoller wait until the socket is readable.
func (p *pollReader) try(fd uintptr) bool {
	for {
		p.n, p.errno = syscall.Read(int(fd), p.buf)
		if p.errno == syscall.EINTR {
			continue
		}
		if p.errno != syscall.EAGAIN {
			return true
		}
		if p.polled {
			return false
		}
		if p.tries++; p.tries == 1 {
			if p.skip > 0 {
				p.skip--
				p.polled = true
				return false
			}
			if !p.shared.enter() {
				p.polled = true
				return false
			}
			p.polling = true
			p.start = monotonic()
		} else if p.since(p.start) >= p.window {
			p.shared.exit()
			p.polling = false
			p.polled = true
			p.missed()
			return false
		}
		runtime.Gosched()
	}
}

// missed counts a poll that caught nothing, and backs off after missPolls
// of them in a row.
func (p *pollReader) missed() {
	if p.misses++; p.misses < missPolls {
		return
	}
	p.misses = 0
	p.skip = p.backoff
	p.backoff = min(2*p.backoff, maxSkip)
}
