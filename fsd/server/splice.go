package server

import (
	"net"
	"syscall"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// FileSplicer is implemented by a File that can move file data into a
// pipe without copying it (fsd/hostfs does, with splice(2) from its open
// fd). Tread then never copies the data through the daemon: the page
// cache's pages go from the file into a pipe and from the pipe into the
// connection's socket, and only the client copies them out.
//
// SpliceRead moves up to count bytes of the file at offset into the pipe
// whose write end is pipeFD (non-blocking, with room for count bytes) and
// returns how many it moved: fewer at the end of the file, 0 at or past
// it. An error with 0 bytes moved makes the server read the request with
// ReadAt instead (a file system without splice support answers EINVAL);
// with some bytes moved it is a short read.
type FileSplicer interface {
	SpliceRead(pipeFD int, offset int64, count int) (int, error)
}

// PipePool is a fixed set of pipes that Treads splice through, shared by
// every connection of a server (WithPipePool). The pipes are made when the
// pool is, so a daemon makes them before it confines itself and pipe2 need
// not be allowed afterwards. A Tread that finds no idle pipe, or one too
// small for it, reads through a buffer.
type PipePool struct {
	idle chan *pipe
}

// NewPipePool makes n pipes able to hold a read of msize bytes
// (F_SETPIPE_SZ; beyond fs.pipe-max-size, 1 MiB by default, the kernel
// wants CAP_SYS_RESOURCE, and without it the pipes keep the largest size
// allowed: larger reads go through buffers).
func NewPipePool(n int, msize uint32) (*PipePool, error) {
	pp := &PipePool{idle: make(chan *pipe, n)}
	for i := 0; i < n; i++ {
		p, err := newPipe(int(msize))
		if err != nil {
			pp.Close()
			return nil, err
		}
		pp.idle <- p
	}
	return pp, nil
}

// Close closes the idle pipes; call it once no connection is served.
func (pp *PipePool) Close() {
	if pp == nil {
		return
	}
	for {
		select {
		case p := <-pp.idle:
			p.close()
		default:
			return
		}
	}
}

// pipe is a pipe a Tread splices through.
type pipe struct {
	r, w int
	cap  int // bytes it holds (F_GETPIPE_SZ)
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// newPipe makes a non-blocking pipe of at least size bytes, or of 1 MiB
// (the default fs.pipe-max-size) when that much is refused.
func newPipe(size int) (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, errors.Wrap(err, "pipe2")
	}
	p := &pipe{r: fds[0], w: fds[1]}
	if _, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, size); err != nil && size > 1<<20 {
		_, _ = unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, 1<<20)
	}
	got, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		p.close()
		return nil, errors.Wrap(err, "F_GETPIPE_SZ")
	}
	p.cap = got
	return p, nil
}

// pipePage is the unit a pipe holds spliced file data in: a read that
// starts inside a page would need a page more than its length, so the
// part before the first page boundary is copied (see spliceRead).
const pipePage = 4096

// rawConn returns nc's raw descriptor access, or nil when nc is no socket
// (net.Pipe in a test).
func rawConn(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// getPipe returns an idle pipe that holds count bytes read from a page
// boundary, or nil: the read then goes through a buffer.
func (c *conn) getPipe(count int) *pipe {
	select {
	case p := <-c.srv.pipes.idle:
		if count <= p.cap {
			return p
		}
		c.putPipe(p)
	default:
	}
	return nil
}

// putPipe gives back an empty pipe.
func (c *conn) putPipe(p *pipe) {
	c.srv.pipes.idle <- p
}

// dropPipe empties a pipe that may still hold data (a reply cut short by
// a failed connection) and gives it back: the pool is fixed, and a client
// that hangs up mid-reply must not use it up. A pipe that cannot be
// emptied is closed (the pool has one pipe less from then on).
func (c *conn) dropPipe(p *pipe) {
	buf := getBuf(64 << 10)
	defer putBuf(buf)
	for {
		n, err := unix.Read(p.r, *buf)
		switch {
		case (err == nil && n > 0) || err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == nil:
			c.putPipe(p) // empty
			return
		}
		c.log.WithError(err).Warn("a splice pipe could not be emptied: closed")
		p.close()
		return
	}
}

// spliceOut moves n bytes from p to the socket, right after the Rread
// header the caller wrote; the caller holds wmu. The pipe goes back to the
// pool when it was drained; on a failure the connection is shut down (the
// frame is cut short: the stream cannot be resynchronised) and the pipe
// closed.
func (c *conn) spliceOut(p *pipe, n int) {
	if c.broken.Load() {
		c.dropPipe(p)
		return
	}
	left := n
	var serr error
	werr := c.rc.Write(func(fd uintptr) bool {
		for left > 0 {
			m, err := unix.Splice(p.r, nil, int(fd), nil, left, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // the socket is full: wait until it drains
			case err != nil:
				serr = err
				return true
			case m == 0:
				serr = errors.New("pipe empty before the reply's end")
				return true
			}
			left -= int(m)
		}
		return true
	})
	if werr == nil {
		werr = serr
	}
	if werr != nil {
		c.log.WithError(werr).Debug("spliced write failed: closing")
		c.dropPipe(p)
		c.shutdown()
		return
	}
	c.putPipe(p)
}
