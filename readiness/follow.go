package readiness

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// DefaultPoll is Follow's poll interval when poll <= 0.
const DefaultPoll = 50 * time.Millisecond

// Follow returns a reader over f, a file another process appends to (for
// example a detached daemon's log file, opened by the caller at its current
// end). At the end of the file, Read waits until more is written: it watches
// the file with inotify (IN_MODIFY), so a line is read as soon as it is
// written, and it looks again every poll (DefaultPoll when <= 0) whatever
// inotify says. Where inotify is unavailable (no /proc, seccomp, the
// per-user limits), Read polls every poll instead. Once ctx is done, Read
// returns io.EOF.
//
// The watch is set up at the first wait at the end of the file and removed
// when Read returns io.EOF or an error (after ctx is done or, for
// FollowUntil, finish is closed), or by Close. The process's followers share
// one inotify descriptor, opened at the first watch and kept: closing an
// inotify descriptor waits for a kernel grace period (10-20 ms on a busy
// machine), which a launcher reporting a daemon ready must not pay. The
// caller closes f.
func Follow(ctx context.Context, f *os.File, poll time.Duration) io.ReadCloser {
	return FollowUntil(ctx, f, poll, nil)
}

// FollowUntil is Follow that also ends once finish is closed and everything
// written so far has been read: the caller closes finish when the writer has
// exited, so the reader ends at the file's last byte instead of following
// on until ctx is done. A nil finish never closes.
func FollowUntil(ctx context.Context, f *os.File, poll time.Duration, finish <-chan struct{}) io.ReadCloser {
	if poll <= 0 {
		poll = DefaultPoll
	}
	return &follower{ctx: ctx, f: f, poll: poll, finish: finish, closing: make(chan struct{})}
}

// Compile-time check.
var _ io.ReadCloser = (*follower)(nil)

// follower implements Follow. Read is not safe for concurrent use (an
// io.Reader rarely is); Close may be called at any time, also while a Read
// waits.
type follower struct {
	ctx    context.Context
	f      *os.File
	poll   time.Duration
	finish <-chan struct{}

	// noWatch is set when inotify turned out to be unavailable, and Read
	// then polls. Only Read uses it.
	noWatch bool

	mu sync.Mutex
	// w is the inotify watch, set up at the first wait at the end of the
	// file and taken away (under mu) by whoever removes it: Read at its
	// end, or Close.
	w *watch

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
}

// Read implements io.Reader.
func (fl *follower) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if fl.ctx.Err() != nil || closed(fl.closing) {
			fl.release()
			return 0, io.EOF
		}
		n, err := fl.f.Read(p)
		if n > 0 {
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			fl.release()
			return 0, errors.Wrapf(err, "follow %s", fl.f.Name())
		}
		// At the end of the file. If the writer had already finished
		// before this read, the file is complete.
		if closed(fl.finish) {
			fl.release()
			return 0, io.EOF
		}
		fl.wait()
	}
}

// Close implements io.Closer: it removes the watch, and a Read that waits,
// or any later Read, returns io.EOF. It does not close the file.
func (fl *follower) Close() error {
	fl.closeOnce.Do(func() { close(fl.closing) })
	fl.release()
	return nil
}

// release removes the watch, if there is one: at Read's end or on Close.
func (fl *follower) release() {
	fl.mu.Lock()
	w := fl.w
	fl.w = nil
	fl.mu.Unlock()
	if w != nil {
		w.remove()
	}
}

// wait returns when the file may have grown: an inotify event, a poll
// interval gone by, ctx done, finish closed, or Close.
func (fl *follower) wait() {
	fl.mu.Lock()
	w := fl.w
	fl.mu.Unlock()
	if w == nil && !fl.noWatch {
		w, err := defaultHub.add(fl.f)
		if err != nil {
			fl.noWatch = true
			return
		}
		fl.mu.Lock()
		if closed(fl.closing) { // Close ran meanwhile and found no watch
			fl.mu.Unlock()
			w.remove()
			return
		}
		fl.w = w
		fl.mu.Unlock()
		// Read once more before the first wait: what was written between
		// the last read and the watch raised no event.
		return
	}
	var event <-chan struct{}
	if w != nil {
		event = w.event
	}
	t := time.NewTimer(fl.poll)
	defer t.Stop()
	select {
	case <-event:
	case <-t.C:
	case <-fl.ctx.Done():
	case <-fl.finish:
	case <-fl.closing:
	}
}

// inotifyInit1 is unix.InotifyInit1; tests replace it to take the polling
// path.
var inotifyInit1 = unix.InotifyInit1

// defaultHub is the process's inotify instance; tests replace it.
var defaultHub = &hub{}

// hub is one inotify descriptor shared by every watch of the process. It
// is non-blocking and lives in Go's poller; a goroutine reads it while at
// least one watch exists and passes each event on to the watches of its
// wd (watch descriptor: one per inode, so followers of the same file share
// it).
type hub struct {
	mu      sync.Mutex
	ino     *os.File // nil until the first watch
	watches map[int32][]*watch
	reading bool // the reader goroutine runs
}

// watch is one follower's registration with the hub.
type watch struct {
	h     *hub
	wd    int32
	event chan struct{} // a token per burst of events (capacity 1)
}

// add watches the file f is open on (through /proc/self/fd, so the inode
// and not the path) for writes.
func (h *hub) add(f *os.File) (*watch, error) {
	// f.Fd would put f in blocking mode: take the number through Control.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, errors.Wrapf(err, "descriptor of %s", f.Name())
	}
	path := ""
	if err := rc.Control(func(fd uintptr) { path = "/proc/self/fd/" + strconv.FormatUint(uint64(fd), 10) }); err != nil {
		return nil, errors.Wrapf(err, "descriptor of %s", f.Name())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ino == nil {
		fd, err := inotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return nil, errors.Wrap(err, "inotify_init1")
		}
		h.ino = os.NewFile(uintptr(fd), "inotify")
		h.watches = make(map[int32][]*watch)
	}
	var wd int
	err = h.control(func(fd int) (err error) {
		wd, err = unix.InotifyAddWatch(fd, path, unix.IN_MODIFY)
		return err
	})
	if err != nil {
		return nil, errors.Wrapf(err, "inotify_add_watch %s (%s)", path, f.Name())
	}
	w := &watch{h: h, wd: int32(wd), event: make(chan struct{}, 1)}
	h.watches[w.wd] = append(h.watches[w.wd], w)
	if !h.reading {
		h.reading = true
		go h.read()
	}
	return w, nil
}

// control runs fn on the inotify descriptor.
func (h *hub) control(fn func(fd int) error) error {
	rc, err := h.ino.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// remove ends the watch; the inode's watch descriptor goes with its last
// watch. The hub's reader stops when no watch is left.
func (w *watch) remove() {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := h.watches[w.wd]
	for i := range ws {
		if ws[i] == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) > 0 {
		h.watches[w.wd] = ws
		return
	}
	delete(h.watches, w.wd)
	// inotify_rm_watch returns at once (the kernel frees the mark later);
	// EINVAL means the kernel already dropped it (the file is gone).
	_ = h.control(func(fd int) error {
		_, err := unix.InotifyRmWatch(fd, uint32(w.wd))
		return err
	})
	if len(h.watches) == 0 {
		// A deadline in the past wakes the reader, which then stops.
		_ = h.ino.SetReadDeadline(time.Unix(1, 0))
	}
}

// read passes events on to the watches until none is left. The deadline is
// set and cleared under mu, so a wake-up from remove is never lost.
func (h *hub) read() {
	var buf [4096]byte
	for {
		h.mu.Lock()
		if len(h.watches) == 0 {
			h.reading = false
			h.mu.Unlock()
			return
		}
		err := h.ino.SetReadDeadline(time.Time{})
		h.mu.Unlock()
		if err != nil {
			h.stop()
			return
		}
		n, err := h.ino.Read(buf[:])
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			h.stop()
			return
		}
		h.dispatch(buf[:n])
	}
}

// dispatch gives a token to the watches named by the events in b (to every
// watch when the kernel's queue overflowed).
func (h *hub) dispatch(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:16]))
		if mask&unix.IN_Q_OVERFLOW != 0 {
			for _, ws := range h.watches {
				notify(ws)
			}
		} else {
			notify(h.watches[wd])
		}
		if size > len(b) {
			break
		}
		b = b[size:]
	}
}

// stop is the reader's end after a read error: every watch gets a token
// (its follower then reads the file, and polls from then on since no
// event comes any more).
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reading = false
	for _, ws := range h.watches {
		notify(ws)
	}
}

func notify(ws []*watch) {
	for _, w := range ws {
		select {
		case w.event <- struct{}{}:
		default: // a token is already there
		}
	}
}
