package hostfs

import (
	"errors"
	"io"

	"github.com/hugelgupf/p9/linux"
	"golang.org/x/sys/unix"
)

// errnoTable maps the host errors a file system call can return to the
// Linux errno the guest receives. It is keyed by the host's numbering
// (unix.Errno) and yields p9's Linux numbering (linux.Errno), so it stays
// exact on hosts whose errno values differ from x86 Linux. Anything not in
// the table reaches the guest as EIO.
//
// p9's own linux.ExtractErrno must not be used: it tests errors.Is against
// os.ErrExist and os.ErrPermission first, which turns ENOTEMPTY into EEXIST
// and EPERM into EACCES.
var errnoTable = map[unix.Errno]linux.Errno{
	unix.E2BIG:        linux.E2BIG,
	unix.EACCES:       linux.EACCES,
	unix.EAGAIN:       linux.EAGAIN,
	unix.EBADF:        linux.EBADF,
	unix.EBADMSG:      linux.EBADMSG,
	unix.EBUSY:        linux.EBUSY,
	unix.ECANCELED:    linux.ECANCELED,
	unix.ECONNABORTED: linux.ECONNABORTED,
	unix.ECONNREFUSED: linux.ECONNREFUSED,
	unix.ECONNRESET:   linux.ECONNRESET,
	unix.EDEADLK:      linux.EDEADLK,
	unix.EDQUOT:       linux.EDQUOT,
	unix.EEXIST:       linux.EEXIST,
	unix.EFAULT:       linux.EFAULT,
	unix.EFBIG:        linux.EFBIG,
	unix.EHOSTDOWN:    linux.EHOSTDOWN,
	unix.EINTR:        linux.EINTR,
	unix.EINVAL:       linux.EINVAL,
	unix.EIO:          linux.EIO,
	unix.EISDIR:       linux.EISDIR,
	unix.EKEYEXPIRED:  linux.EKEYEXPIRED,
	unix.EKEYREJECTED: linux.EKEYREJECTED,
	unix.EKEYREVOKED:  linux.EKEYREVOKED,
	unix.ELOOP:        linux.ELOOP,
	unix.EMFILE:       linux.EMFILE,
	unix.EMLINK:       linux.EMLINK,
	unix.ENAMETOOLONG: linux.ENAMETOOLONG,
	unix.ENFILE:       linux.ENFILE,
	unix.ENODATA:      linux.ENODATA,
	unix.ENODEV:       linux.ENODEV,
	unix.ENOENT:       linux.ENOENT,
	unix.ENOKEY:       linux.ENOKEY,
	unix.ENOLCK:       linux.ENOLCK,
	unix.ENOLINK:      linux.ENOLINK,
	unix.ENOMEDIUM:    linux.ENOMEDIUM,
	unix.ENOMEM:       linux.ENOMEM,
	unix.ENOSPC:       linux.ENOSPC,
	unix.ENOSYS:       linux.ENOSYS,
	unix.ENOTCONN:     linux.ENOTCONN,
	unix.ENOTDIR:      linux.ENOTDIR,
	unix.ENOTEMPTY:    linux.ENOTEMPTY,
	unix.ENOTSOCK:     linux.ENOTSOCK,
	unix.ENOTSUP:      linux.EOPNOTSUPP, // ENOTSUP == EOPNOTSUPP on Linux
	unix.ENOTTY:       linux.ENOTTY,
	unix.ENXIO:        linux.ENXIO,
	unix.EOVERFLOW:    linux.EOVERFLOW,
	unix.EPERM:        linux.EPERM,
	unix.EPIPE:        linux.EPIPE,
	unix.ERANGE:       linux.ERANGE,
	unix.EREMOTEIO:    linux.EREMOTEIO,
	unix.EROFS:        linux.EROFS,
	unix.ESPIPE:       linux.ESPIPE,
	unix.ESTALE:       linux.ESTALE,
	unix.ETIMEDOUT:    linux.ETIMEDOUT,
	unix.ETXTBSY:      linux.ETXTBSY,
	unix.EUCLEAN:      linux.EUCLEAN,
	unix.EXDEV:        linux.EXDEV,
}

// hostErrno turns an error from a host system call into the linux.Errno
// the guest must see. nil stays nil, io.EOF stays io.EOF (p9.File allows
// it for reads), a linux.Errno passes through, and an error the table does
// not know becomes EIO.
//
// The common cases (a bare unix.Errno from a system call, a linux.Errno)
// are a type switch that allocates nothing: a failed lookup is a hot path
// for a guest (every stat of a name that does not exist).
func hostErrno(err error) error {
	switch e := err.(type) {
	case nil:
		return nil
	case unix.Errno:
		return errnoOf(e)
	case linux.Errno:
		return e
	}
	if err == io.EOF {
		return err
	}
	return wrappedErrno(err)
}

// errnoOf maps one host errno.
func errnoOf(e unix.Errno) error {
	if le, ok := errnoTable[e]; ok {
		return le
	}
	return linux.EIO
}

// wrappedErrno is hostErrno for an error that wraps an errno.
func wrappedErrno(err error) error {
	var le linux.Errno
	if errors.As(err, &le) {
		return le
	}
	var ue unix.Errno
	if errors.As(err, &ue) {
		return errnoOf(ue)
	}
	return linux.EIO
}
