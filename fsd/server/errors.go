package server

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/hugelgupf/p9/linux"
	pkgerrors "github.com/pkg/errors"
)

// Reasons ServeConn ends a connection without answering: protocol
// violations after which the byte stream cannot be trusted. ServeConn's
// error satisfies errors.Is with one of them.
var (
	// ErrFrameTooLarge means a frame's size field exceeds the negotiated
	// msize (or, before Tversion, the server's maximum).
	ErrFrameTooLarge = pkgerrors.New("9p frame larger than msize")
	// ErrFrameTooSmall means a frame's size field is below the 7-byte
	// header.
	ErrFrameTooSmall = pkgerrors.New("9p frame smaller than its header")
	// ErrDuplicateTag means a request reused the tag of a request still in
	// flight.
	ErrDuplicateTag = pkgerrors.New("9p tag already in flight")
	// ErrMsizeTooSmall means Tversion offered an msize below MinMsize.
	ErrMsizeTooSmall = pkgerrors.New("9p msize below the minimum")
	// ErrBadVersion means a Tversion frame did not decode.
	ErrBadVersion = pkgerrors.New("9p Tversion malformed")
)

// errnoOf is the one place a File's error becomes the errno sent in
// Rlerror. A linux.Errno anywhere in the chain goes out unchanged, then a
// syscall (unix) errno; errors that carry no errno but match an io/fs
// sentinel get the matching errno; anything else is EIO. Unlike p9's
// ExtractErrno it never rewrites an errno (p9 turns ENOTEMPTY into EEXIST and
// EPERM into EACCES because it tests the fs sentinels first).
func errnoOf(err error) linux.Errno {
	if err == nil {
		return 0
	}
	var le linux.Errno
	if errors.As(err, &le) {
		if le == 0 {
			return linux.EIO
		}
		return le
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		if se == 0 {
			return linux.EIO
		}
		return linux.Errno(se)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return linux.ENOENT
	case errors.Is(err, fs.ErrExist):
		return linux.EEXIST
	case errors.Is(err, fs.ErrPermission):
		return linux.EACCES
	case errors.Is(err, fs.ErrInvalid):
		return linux.EINVAL
	case errors.Is(err, fs.ErrClosed):
		return linux.EBADF
	}
	return linux.EIO
}
