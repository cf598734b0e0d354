package launcher

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/socket"
)

// probeTimeout bounds the 9P round trip of Status when ctx has no deadline.
const probeTimeout = 5 * time.Second

// StatusInfo is what Status found; it is meant to be printed as JSON.
type StatusInfo struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
	// Alive: the process exists (and is not a zombie) and IdentityOK.
	Alive bool `json:"alive"`
	// IdentityOK: the state file names PID and its start time matches
	// /proc/PID/stat; or, with no state file, PID holds the listening socket.
	IdentityOK bool `json:"identity_ok"`
	// SocketListening: something listens on the socket (from /proc/net/unix;
	// no connection is made, see socket.Alive).
	SocketListening bool `json:"socket_listening"`
	// Answers: a 9P Tversion round trip over the socket succeeded. Only
	// tried for the built-in daemon (the state file says so) when it is alive
	// and listening; null otherwise, because an external daemon such as
	// virtiofsd serves exactly one connection and a probe would end it.
	Answers *bool `json:"answers"`
	// Detail says why something above is false.
	Detail string `json:"detail,omitempty"`
}

// Status reports on the daemon PID serving socketPath without changing
// anything. A daemon that is gone is a StatusInfo with Alive false, not an
// error; errors are for invalid arguments (ErrInvalidPID, a relative socket
// path).
func Status(ctx context.Context, pid int, socketPath string) (*StatusInfo, error) {
	if pid <= 0 {
		return nil, errors.Wrapf(ErrInvalidPID, "pid %d", pid)
	}
	socketPath, err := cleanSocketPath(socketPath)
	if err != nil {
		return nil, err
	}
	si := &StatusInfo{PID: pid, Socket: socketPath}
	var details []string
	note := func(s string) { details = append(details, s) }

	st, stErr := ReadState(socketPath)
	ps, psErr := readProcStat(pid)
	exists := psErr == nil && ps.State != 'Z'
	switch {
	case psErr != nil:
		note("no such process")
	case ps.State == 'Z':
		note("the process has exited (zombie)")
	}
	switch {
	case stErr == nil:
		switch {
		case st.PID != pid:
			note("the state file names pid " + strconv.Itoa(st.PID))
		case st.Socket != socketPath:
			note("the state file is for socket " + st.Socket)
		case psErr == nil && st.StartTime != ps.StartTime:
			note("the pid was reused: its start time differs from the state file's")
		case psErr == nil:
			si.IdentityOK = true
		}
	case errors.Is(stErr, os.ErrNotExist):
		if exists {
			held, err := socket.HeldBy(pid, socketPath)
			si.IdentityOK = err == nil && held
			if !si.IdentityOK {
				note("no state file, and the pid does not hold the listening socket")
			}
		}
	default:
		note("unusable state file: " + stErr.Error())
	}
	si.Alive = exists && si.IdentityOK

	listening, err := socket.Alive(socketPath)
	si.SocketListening = err == nil && listening
	if !si.SocketListening {
		if err != nil {
			note("socket: " + err.Error())
		} else {
			note("nothing listens on the socket")
		}
	}

	if stErr == nil && st.Builtin && si.Alive && si.SocketListening {
		ok := true
		if err := probe9P(ctx, socketPath); err != nil {
			ok = false
			note("9P version exchange failed: " + err.Error())
		}
		si.Answers = &ok
	}
	for i, d := range details {
		if i > 0 {
			si.Detail += "; "
		}
		si.Detail += d
	}
	return si, nil
}

// probe9P connects to the socket and performs a Tversion round trip with
// p9's client.
func probe9P(ctx context.Context, socketPath string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, probeTimeout)
		defer cancel()
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return errors.Wrapf(err, "dial %s", socketPath)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Close the connection when ctx ends, so the exchange cannot outlive it.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c, err := p9.NewClient(conn)
	if err != nil {
		return errors.Wrapf(err, "9P version exchange on %s", socketPath)
	}
	return c.Close()
}
