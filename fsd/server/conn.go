package server

import (
	"bufio"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hugelgupf/p9/linux"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// conn is the state of one connection.
type conn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	log *logrus.Entry
	br  *bufio.Reader
	pr  *pollReader // under br
	hdr [proto.HeaderSize]byte
	tv  proto.Tversion

	// msize and versioned change only in the reader goroutine, and only
	// while no request is in flight (a second Tversion waits for them), so
	// request goroutines read them without locking.
	msize     uint32
	versioned bool

	// wmu serializes writes to nc. A reply's tag leaves the tag table under
	// wmu, so a Tflush that finds the tag gone knows the reply is written
	// or is being written ahead of its own Rflush.
	wmu     sync.Mutex
	scratch [proto.HeaderSize + 4]byte
	broken  atomic.Bool
	once    sync.Once

	tmu  sync.Mutex
	tags map[proto.Tag]*request

	fmu        sync.Mutex
	fids       map[proto.FID]*fidEntry
	xattrBytes int64

	// slots bounds the requests in flight: the reader puts a token before
	// reading a frame and the token is taken back when the reply is
	// written.
	slots chan struct{}
	// inflight counts requests read and not yet answered (Tflush entries
	// included). Add runs only in the reader goroutine; Wait runs in the
	// reader goroutine (second Tversion) or after it returned.
	inflight sync.WaitGroup

	// rc is the socket's raw descriptor access for spliced reads (see
	// FileSplicer); nil when the connection is no socket (net.Pipe in a
	// test) or the server has no pipes.
	rc syscall.RawConn

	// Requests run on worker goroutines that outlive them: a goroutine per
	// request would grow a fresh stack on every request (runtime.newstack
	// was 6-14% of the server's CPU). The reader hands a request to an idle
	// worker through work, or starts a worker when none is idle; a worker
	// that finds maxIdleWorkers others idle exits, so a burst does not
	// leave its goroutines behind. The number of workers is bounded by the
	// requests in flight (slots).
	work    chan *request
	idle    atomic.Int32  // workers idle or about to be: only bounds how many stay
	quit    chan struct{} // closed when the connection is done: idle workers exit
	workers sync.WaitGroup
}

// maxIdleWorkers is how many idle workers a connection keeps.
const maxIdleWorkers = 4

func newConn(s *Server, nc net.Conn) *conn {
	id := s.nextConn.Add(1)
	c := &conn{
		srv:   s,
		id:    id,
		nc:    nc,
		log:   s.log.WithField("conn", id),
		tags:  make(map[proto.Tag]*request),
		fids:  make(map[proto.FID]*fidEntry),
		slots: make(chan struct{}, s.maxInflight),
		work:  make(chan *request),
		quit:  make(chan struct{}),
	}
	rc := rawConn(nc)
	if s.pipes != nil {
		c.rc = rc // spliced reads
	}
	c.pr = newPollReader(nc, rc, s.busyPoll, &s.poll)
	c.br = bufio.NewReaderSize(c.pr, readBufferSize)
	return c
}

// shutdown closes the connection once; it unblocks the reader and makes
// pending replies fail fast.
func (c *conn) shutdown() {
	c.once.Do(func() {
		c.broken.Store(true)
		c.nc.Close()
	})
}

// readLoop reads and dispatches frames until the connection fails or the
// client breaks the protocol.
func (c *conn) readLoop() (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Errorf("panic in the connection reader: %v\n%s", p, debug.Stack())
			err = errors.Errorf("panic in the connection reader: %v", p)
		}
	}()
	for {
		c.slots <- struct{}{}
		if err := c.readOne(); err != nil {
			<-c.slots
			return err
		}
	}
}

// readOne reads one frame and hands it on. It owns the slot taken by
// readLoop: it passes the slot to a request or gives it back, except when it
// returns an error, in which case readLoop gives it back.
func (c *conn) readOne() error {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return errors.Wrap(err, "read 9p header")
	}
	if c.pr.rc != nil {
		c.srv.poll.frame(c.id)
	}
	h, err := proto.ParseHeader(c.hdr[:])
	if err != nil {
		return errors.Wrapf(ErrFrameTooSmall, "size field %d", h.Size)
	}
	// Before Tversion nothing but a Tversion (a few dozen bytes) is
	// served: bound the frame by the smallest msize, not the largest.
	limit := uint32(MinMsize)
	if c.versioned {
		limit = c.msize
	}
	if h.Size > limit {
		return errors.Wrapf(ErrFrameTooLarge, "%v frame of %d bytes, msize %d", h.Type, h.Size, limit)
	}
	// A Twrite frame is placed so that its payload starts at payloadAlign
	// in the buffer.
	off := 0
	if h.Type == proto.TypeTwrite && h.Size >= proto.TwriteHeaderSize {
		off = payloadAlign - proto.TwriteHeaderSize
	}
	fp := getBuf(off + int(h.Size))
	frame := (*fp)[off:]
	copy(frame, c.hdr[:])
	if _, err := io.ReadFull(c.br, frame[proto.HeaderSize:]); err != nil {
		putBuf(fp)
		return errors.Wrapf(err, "read %v body", h.Type)
	}
	body := frame[proto.HeaderSize:]

	if h.Type == proto.TypeTversion {
		err := c.version(h.Tag, body)
		putBuf(fp)
		if err != nil {
			return err // readLoop gives the slot back
		}
		<-c.slots
		return nil
	}
	if !c.versioned {
		// Nothing but Tversion is understood before Tversion.
		putBuf(fp)
		c.log.Debugf("%v before Tversion", h.Type)
		c.writeError(h.Tag, linux.EPROTO)
		<-c.slots
		return nil
	}

	c.tmu.Lock()
	if _, dup := c.tags[h.Tag]; dup {
		c.tmu.Unlock()
		putBuf(fp)
		return errors.Wrapf(ErrDuplicateTag, "%v reuses tag %d of a request in flight", h.Type, h.Tag)
	}
	r := getRequest(c, h.Tag, h.Type)
	c.tags[h.Tag] = r
	c.tmu.Unlock()
	c.inflight.Add(1)
	c.srv.inflight.Add(1)

	m := r.t.get(h.Type)
	if m == nil {
		putBuf(fp)
		c.log.Debugf("unsupported message %v", h.Type)
		c.finish(r, r.errorReply(linux.EOPNOTSUPP))
		return nil
	}
	if err := proto.DecodeBody(body, m); err != nil {
		putBuf(fp)
		c.log.WithError(err).Debug("malformed request")
		c.finish(r, r.errorReply(linux.EINVAL))
		return nil
	}
	if h.Type == proto.TypeTwrite {
		// The payload is handed to the File straight from the frame.
		r.frame = fp
	} else {
		putBuf(fp)
	}
	if h.Type == proto.TypeTflush {
		c.flush(r)
		return nil
	}
	c.dispatch(r)
	return nil
}

// dispatch hands r to an idle worker, or to a new one when none waits. It
// runs in the reader goroutine only (workers.Add must not race with the
// Wait in stopWorkers).
func (c *conn) dispatch(r *request) {
	select {
	case c.work <- r:
		return
	default:
	}
	c.workers.Add(1)
	go c.worker(r)
}

// worker runs r, then the requests dispatch hands it, until the connection
// is done or enough other workers are idle.
func (c *conn) worker(r *request) {
	defer c.workers.Done()
	for {
		c.run(r)
		if c.idle.Add(1) > maxIdleWorkers {
			c.idle.Add(-1)
			return
		}
		select {
		case r = <-c.work:
			c.idle.Add(-1)
		case <-c.quit:
			c.idle.Add(-1)
			return
		}
	}
}

// stopWorkers ends the idle workers once no request is in flight and the
// reader has returned, and waits for every worker to exit.
func (c *conn) stopWorkers() {
	close(c.quit)
	c.workers.Wait()
}

// flush answers a Tflush: at once when the old tag is not in flight,
// otherwise right after the old request's reply (see finish). No goroutine
// waits.
func (c *conn) flush(r *request) {
	old := r.t.flush.OldTag
	c.tmu.Lock()
	if o, ok := c.tags[old]; ok && o != r {
		o.waiters = append(o.waiters, r)
		c.tmu.Unlock()
		return
	}
	c.tmu.Unlock()
	c.finish(r, r.emptyReply(proto.TypeRflush))
}

// run handles one request on a worker goroutine.
func (c *conn) run(r *request) {
	var reply []byte
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.log.Errorf("panic handling %v: %v\n%s", r.typ, p, debug.Stack())
				reply = r.errorReply(linux.EIO)
			}
		}()
		reply = c.handle(r)
	}()
	c.finish(r, reply)
}

// finish writes a request's reply, then the Rflush of every Tflush waiting
// on it (and on those, transitively), and releases them all.
func (c *conn) finish(r *request, reply []byte) {
	if len(reply) > int(c.msize) && c.versioned {
		// Handlers bound their replies; this is the last line of defence.
		c.log.Errorf("%v reply of %d bytes exceeds msize %d", r.typ, len(reply), c.msize)
		reply = r.errorReply(linux.EMSGSIZE)
	}
	c.wmu.Lock()
	c.tmu.Lock()
	delete(c.tags, r.tag)
	waiters := r.waiters
	c.tmu.Unlock()
	c.write(reply)
	if r.pipe != nil {
		// A spliced Rread: the header above, the data from the pipe.
		c.spliceOut(r.pipe, r.pipeN)
		r.pipe = nil
	}
	var done []*request
	for i := 0; i < len(waiters); i++ {
		w := waiters[i]
		c.tmu.Lock()
		delete(c.tags, w.tag)
		waiters = append(waiters, w.waiters...)
		c.tmu.Unlock()
		proto.PutHeader(c.scratch[:], proto.HeaderSize, proto.TypeRflush, w.tag)
		c.write(c.scratch[:proto.HeaderSize])
		done = append(done, w)
	}
	c.wmu.Unlock()
	c.pr.noteReply()
	c.release(r)
	for _, w := range done {
		c.release(w)
	}
}

// release returns a finished request's slot and buffers.
func (c *conn) release(r *request) {
	putRequest(r)
	c.srv.inflight.Add(-1)
	c.inflight.Done()
	<-c.slots
}

// write sends one frame; the caller holds wmu. After a failed write the
// connection is shut down and later writes are skipped.
func (c *conn) write(b []byte) {
	if c.broken.Load() {
		return
	}
	if _, err := c.nc.Write(b); err != nil {
		c.log.WithError(err).Debug("write failed: closing")
		c.shutdown()
	}
}

// writeError sends an Rlerror for a frame that has no request entry.
func (c *conn) writeError(tag proto.Tag, e linux.Errno) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	proto.PutHeader(c.scratch[:], proto.HeaderSize+4, proto.TypeRlerror, tag)
	le32(c.scratch[proto.HeaderSize:], uint32(e))
	c.write(c.scratch[:])
}

// version handles Tversion in the reader goroutine: it waits for every
// request in flight, clunks every fid, and answers. A malformed Tversion or
// an msize below MinMsize ends the connection.
func (c *conn) version(tag proto.Tag, body []byte) error {
	if err := proto.DecodeBody(body, &c.tv); err != nil {
		return errors.Wrap(ErrBadVersion, err.Error())
	}
	c.inflight.Wait()
	c.clunkAll()
	c.versioned = false
	msize := c.tv.Msize
	if msize > c.srv.maxMsize {
		msize = c.srv.maxMsize
	}
	rv := proto.Rversion{Msize: msize, Version: proto.VersionUnknown}
	if knownVersion(c.tv.Version) {
		if c.tv.Msize < MinMsize {
			return errors.Wrapf(ErrMsizeTooSmall, "msize %d, minimum %d", c.tv.Msize, MinMsize)
		}
		rv.Version = proto.Version
		c.msize = msize
		c.versioned = true
		if c.srv.sendBuffer {
			c.growSendBuffer(msize)
		}
	} else {
		c.log.Debugf("unknown version %q", c.tv.Version)
	}
	b, err := proto.Append(c.scratch[:0:0], tag, &rv)
	if err != nil {
		return errors.Wrap(err, "encode Rversion")
	}
	c.wmu.Lock()
	c.write(b)
	c.wmu.Unlock()
	return nil
}

// knownVersion accepts "9P2000.L" and "9P2000.L.Google.N": the Google
// extensions are answered with plain 9P2000.L, which p9's client accepts.
func knownVersion(v string) bool {
	if v == proto.Version {
		return true
	}
	n, ok := strings.CutPrefix(v, proto.Version+".Google.")
	if !ok || n == "" || len(n) > 9 {
		return false
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func le32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
