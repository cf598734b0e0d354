package readiness

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pkg/errors"
)

// Reasons a daemon was not ready; a *NotReadyError wraps one of them or the
// context's error.
var (
	ErrTimeout      = errors.New("daemon not ready before the timeout")
	ErrExited       = errors.New("daemon exited before it was ready")
	ErrStreamClosed = errors.New("daemon closed its stderr before it was ready")
)

// DefaultTailLines is how many last lines a Watcher keeps unless
// WithTailLines says otherwise.
const DefaultTailLines = 20

// Grace periods Wait allows after an exit or a closed stream, so that the
// reported tail holds the daemon's last words and a closed stream can be
// told apart from an exit. They bound only the failure paths.
const (
	drainGrace  = 500 * time.Millisecond // exit seen: wait for the stream's EOF
	streamGrace = time.Second            // EOF seen: wait for the exit
)

type watchOptions struct {
	maxLine   int
	tailLines int
	sink      func(line string)
}

// Option configures Watch.
type Option func(*watchOptions)

// WithMaxLine sets how many bytes of each line are kept (DefaultMaxLine
// when n <= 0). A ready text longer than this can never match.
func WithMaxLine(n int) Option { return func(o *watchOptions) { o.maxLine = n } }

// WithTailLines sets how many last lines are kept for error reports
// (default DefaultTailLines; 0 keeps none).
func WithTailLines(n int) Option { return func(o *watchOptions) { o.tailLines = n } }

// WithSink passes every line to fn, before and after readiness, for example
// to a logrus entry. fn runs on the Watcher's goroutine: while it blocks,
// nothing is read, and the daemon eventually blocks writing to a full pipe.
func WithSink(fn func(line string)) Option { return func(o *watchOptions) { o.sink = fn } }

// Watcher reads a daemon's output until EOF and reports the first line that
// contains the ready text.
type Watcher struct {
	match string
	ready chan struct{}
	done  chan struct{}
	tail  *Tail

	mu        sync.Mutex
	err       error
	readyLine string
}

// Watch starts one goroutine that reads r line by line until EOF or a read
// error, and returns at once. Ready is closed at the first line that
// contains match (an empty match is satisfied by the first line); the
// goroutine then keeps reading, so lines after readiness still reach the
// sink. The goroutine ends only when r does: close r (or cancel the context
// given to Follow) to stop it.
func Watch(r io.Reader, match string, opts ...Option) *Watcher {
	o := watchOptions{maxLine: DefaultMaxLine, tailLines: DefaultTailLines}
	for _, opt := range opts {
		opt(&o)
	}
	w := &Watcher{
		match: match,
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		tail:  NewTail(o.tailLines),
	}
	go w.run(NewLineReader(r, o.maxLine), o.sink)
	return w
}

func (w *Watcher) run(lr *LineReader, sink func(string)) {
	defer close(w.done)
	isReady := false
	for {
		line, _, err := lr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
			return
		}
		w.tail.Add(line)
		if sink != nil {
			sink(line)
		}
		if !isReady && strings.Contains(line, w.match) {
			isReady = true
			w.mu.Lock()
			w.readyLine = line
			w.mu.Unlock()
			close(w.ready)
		}
	}
}

// Ready is closed at the first line containing the ready text.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Done is closed when the stream hit EOF or a read error and the goroutine
// has exited.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Err returns the read error that ended the stream, or nil for EOF (and nil
// before Done is closed).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// ReadyLine returns the line that matched, or "" before Ready is closed.
func (w *Watcher) ReadyLine() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readyLine
}

// Tail returns the last lines read, oldest first.
func (w *Watcher) Tail() []string { return w.tail.Lines() }

// NotReadyError says why a daemon did not become ready.
type NotReadyError struct {
	// Reason is ErrTimeout, ErrExited, ErrStreamClosed or the context's
	// error.
	Reason error
	// Waited is how long Wait waited.
	Waited time.Duration
	// Tail holds the daemon's last lines, oldest first.
	Tail []string
}

// Error includes the reason, the time waited and the last lines.
func (e *NotReadyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v (waited %v)", e.Reason, e.Waited.Round(time.Millisecond))
	if len(e.Tail) == 0 {
		b.WriteString("; it wrote nothing")
		return b.String()
	}
	fmt.Fprintf(&b, "; last %d lines:", len(e.Tail))
	for _, l := range e.Tail {
		b.WriteString("\n\t")
		b.WriteString(l)
	}
	return b.String()
}

// Unwrap returns Reason.
func (e *NotReadyError) Unwrap() error { return e.Reason }

// Wait blocks until the daemon watched by w is ready (nil), or fails with a
// *NotReadyError whose Reason is:
//   - ErrTimeout when timeout (> 0; 0 means no limit) passes first;
//   - ErrExited when exited is closed first (the caller closes it when the
//     child has exited; nil means the caller does not track the child);
//   - ErrStreamClosed when the stream ends without the ready line and the
//     child does not exit within a short grace;
//   - ctx.Err() when ctx is done first.
//
// When both the ready line and the exit have happened, ready wins only if
// the ready line came first: Wait checks the exit, then whether Ready was
// already closed at that moment. A Wait called after both happened counts
// the ready line as first (an exited process writes nothing more, so the
// line was written while it ran).
//
// On an exit, Wait waits briefly for the stream's end so that the tail
// holds the daemon's last lines.
func Wait(ctx context.Context, w *Watcher, exited <-chan struct{}, timeout time.Duration) error {
	start := time.Now()
	select {
	case <-w.Ready():
		return nil
	default:
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	fail := func(reason error) error {
		return &NotReadyError{Reason: reason, Waited: time.Since(start), Tail: w.Tail()}
	}
	select {
	case <-w.Ready():
		return nil
	case <-exited:
		if closed(w.Ready()) {
			return nil
		}
		waitFor(ctx, w.Done(), deadline, drainGrace)
		return fail(ErrExited)
	case <-w.Done():
		if closed(w.Ready()) {
			return nil // the ready line was the last thing read
		}
		if exited != nil && waitFor(ctx, exited, deadline, streamGrace) {
			return fail(ErrExited)
		}
		return fail(ErrStreamClosed)
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-deadline:
		return fail(ErrTimeout)
	}
}

// closed reports whether ch is closed, without blocking.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitFor waits up to grace for ch, giving up early when ctx is done or the
// deadline passes. It reports whether ch was closed.
func waitFor(ctx context.Context, ch <-chan struct{}, deadline <-chan time.Time, grace time.Duration) bool {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	case <-deadline:
	case <-t.C:
	}
	return closed(ch)
}

// Compile-time check.
var _ error = (*NotReadyError)(nil)
