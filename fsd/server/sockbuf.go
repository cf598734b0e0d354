package server

import (
	"syscall"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// sendBufferSlack is added to msize when the send buffer is sized: room for
// the socket buffers' own overhead and a small reply queued behind a large
// one.
const sendBufferSlack = 64 << 10

// growSendBuffer makes the socket's send buffer hold a whole reply of msize
// bytes (see WithSendBuffer). Linux doubles the value set and caps SO_SNDBUF
// at net.core.wmem_max; SO_SNDBUFFORCE (CAP_NET_ADMIN) is tried first.
// Failure is not an error: the server works with any buffer, only with more
// wake-ups per reply; it is logged at debug level.
func (c *conn) growSendBuffer(msize uint32) {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return // not a socket (net.Pipe in a test)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	want := int(msize) + sendBufferSlack
	var got int
	cerr := rc.Control(func(fd uintptr) { got, err = setSendBuffer(int(fd), want) })
	switch {
	case cerr != nil:
		c.log.WithError(cerr).Debug("send buffer: no descriptor")
	case err != nil:
		c.log.WithError(err).Debugf("send buffer: %d bytes wanted, %d in effect", 2*want, got)
	}
}

// setSendBuffer asks for a send buffer of want bytes (2*want in effect, as
// the kernel counts) and returns the size in effect.
func setSendBuffer(fd, want int) (int, error) {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err == nil && cur >= 2*want {
		return cur, nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, want); err != nil {
			return cur, errors.Wrapf(err, "setsockopt(SO_SNDBUF, %d)", want)
		}
	}
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return 0, errors.Wrap(err, "getsockopt(SO_SNDBUF)")
	}
	if got < 2*want {
		return got, errors.Errorf("capped at %d (net.core.wmem_max)", got)
	}
	return got, nil
}
