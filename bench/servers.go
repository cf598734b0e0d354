package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// Environment of a server role: the harness starts its own executable with
// these set and the listening socket as fd 3 (see MaybeServe).
const (
	envRole      = "FSDBENCH_ROLE"       // roleEcho or roleP9Localfs
	envDir       = "FSDBENCH_DIR"        // export directory (p9-localfs)
	envReplySize = "FSDBENCH_REPLY_SIZE" // echo reply frame size; 0 echoes
)

const (
	roleEcho      = "echo"
	roleP9Localfs = "p9-localfs"
)

// listenerFD is where a server role finds its listening socket.
const listenerFD = 3

// maxEchoFrame bounds a frame the echo server accepts.
const maxEchoFrame = 1 << 20

// ErrUnknownRole is returned by MaybeServe for a role it does not know.
var ErrUnknownRole = errors.New("unknown server role")

// MaybeServe runs the server role this process was started for and exits;
// it returns at once when the process was not started as a server. Call it
// first thing in main (and in TestMain of a test that runs the harness):
// the harness starts the echo floor and the p9-localfs reference by running
// its own executable in a role.
func MaybeServe() {
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	if err := serveRole(role); err != nil {
		fmt.Fprintf(os.Stderr, "fsdbench %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func serveRole(role string) error {
	l, err := net.FileListener(os.NewFile(listenerFD, "listener"))
	if err != nil {
		return errors.Wrapf(err, "listener on fd %d", listenerFD)
	}
	defer l.Close()
	switch role {
	case roleEcho:
		size, err := strconv.Atoi(os.Getenv(envReplySize))
		if err != nil || size < 0 || size > maxEchoFrame {
			return errors.Errorf("bad %s %q", envReplySize, os.Getenv(envReplySize))
		}
		return serveEcho(l, size)
	case roleP9Localfs:
		dir := os.Getenv(envDir)
		if dir == "" {
			return errors.Errorf("%s is empty", envDir)
		}
		// hugelgupf/p9's server over its fsimpl/localfs: the reference the
		// harness measures fsd against until (and besides) fsd itself.
		return errors.Wrap(p9.NewServer(localfs.Attacher(dir)).Serve(l), "p9 server")
	default:
		return errors.Wrap(ErrUnknownRole, role)
	}
}

// serveEcho answers every 9P-framed request with one frame: the request
// itself when replySize is 0, else a frame of replySize bytes carrying the
// request's type+1 and tag. It is the floor: the least work a server can do
// per round trip over the same socket and framing.
func serveEcho(l net.Listener, replySize int) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return errors.Wrap(err, "accept")
		}
		go func() {
			defer c.Close()
			_ = echoConn(c, replySize)
		}()
	}
}

func echoConn(c io.ReadWriter, replySize int) error {
	r := bufio.NewReaderSize(c, 64<<10)
	frame := make([]byte, 0, 4096)
	reply := make([]byte, replySize)
	if replySize >= frameHeaderLen {
		binary.LittleEndian.PutUint32(reply, uint32(replySize))
	}
	for {
		var err error
		if frame, err = readFrame(r, frame[:0], maxEchoFrame); err != nil {
			return err
		}
		out := frame
		if replySize >= frameHeaderLen {
			reply[4] = frame[4] + 1
			copy(reply[5:7], frame[5:7])
			out = reply
		}
		if _, err := c.Write(out); err != nil {
			return errors.Wrap(err, "write reply")
		}
	}
}

// readFrame appends one 9P frame from r to buf and returns it.
func readFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, errors.Wrap(err, "read frame header")
	}
	size := int(binary.LittleEndian.Uint32(hdr[:]))
	if size < frameHeaderLen || size > max {
		return buf, errors.Wrapf(ErrFrameTooLarge, "incoming frame of %d bytes", size)
	}
	buf = append(buf, hdr[:]...)
	if cap(buf) < size {
		nb := make([]byte, len(buf), size)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf[frameHeaderLen:]); err != nil {
		return buf, errors.Wrap(err, "read frame body")
	}
	return buf, nil
}
