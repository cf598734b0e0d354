package readiness

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openLog creates an empty log file and returns its writer and a reader at
// its end, both closed when the test ends.
func openLog(t *testing.T) (w, r *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "daemon.log")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	r, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return w, r
}

// testHub gives the test an inotify hub of its own, whose descriptor is
// closed when the test ends, and returns it.
func testHub(t *testing.T) *hub {
	t.Helper()
	saved := defaultHub
	h := &hub{}
	defaultHub = h
	t.Cleanup(func() {
		defaultHub = saved
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.ino != nil {
			h.ino.Close()
		}
	})
	return h
}

// withoutInotify makes inotify_init1 fail as it does where seccomp or the
// per-user instance limit forbids it, until the test ends.
func withoutInotify(t *testing.T) *atomic.Int32 {
	t.Helper()
	testHub(t)
	saved := inotifyInit1
	var tries atomic.Int32
	inotifyInit1 = func(int) (int, error) {
		tries.Add(1)
		return -1, unix.ENOSYS
	}
	t.Cleanup(func() { inotifyInit1 = saved })
	return &tries
}

// hubWatches returns the number of inotify watches the kernel lists for
// h's descriptor (/proc/self/fdinfo), and whether the descriptor exists.
func hubWatches(t *testing.T, h *hub) (int, bool) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ino == nil {
		return 0, false
	}
	n := 0
	err := h.control(func(fd int) error {
		b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
		n = strings.Count(string(b), "inotify wd:")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, true
}

// TestFollowWakesOnWrite proves that a follower at the end of the file
// wakes up for a write through inotify: with a poll interval of an hour,
// only the inotify event can deliver the lines before the test's hang
// limit. The writer appends in pieces, from another process's point of
// view like a daemon writing its log.
func TestFollowWakesOnWrite(t *testing.T) {
	h := testHub(t)
	wf, rf := openLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := Follow(ctx, rf, time.Hour)
	seen := make(chan string, 10)
	w := Watch(r, readyText, WithSink(func(l string) { seen <- l }))
	for i := 1; i <= 3; i++ {
		// Each write finds the follower waiting (the previous line was
		// read), so each needs its own wake-up.
		fmt.Fprintf(wf, "line %d\n", i)
		select {
		case l := <-seen:
			if l != fmt.Sprintf("line %d", i) {
				t.Fatalf("line %q, want %q", l, fmt.Sprintf("line %d", i))
			}
		case <-time.After(hang):
			t.Fatalf("line %d not read: the follower did not wake up on the write", i)
		}
	}
	fmt.Fprintln(wf, readyText)
	if err := Wait(ctx, w, nil, hang); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, w.Done(), "Follow's EOF after cancel")
	if n, ok := hubWatches(t, h); !ok || n != 0 {
		t.Fatalf("inotify descriptor %v, %d watches left; want the descriptor and no watch", ok, n)
	}
}

// TestFollowPollsWithoutInotify proves the fallback: where inotify is
// unavailable the follower polls, and lines still arrive.
func TestFollowPollsWithoutInotify(t *testing.T) {
	tries := withoutInotify(t)
	wf, rf := openLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := Follow(ctx, rf, time.Millisecond)
	w := Watch(r, readyText)
	// The log is empty: the follower is at its end and tries to watch it
	// before anything is written, so the lines below can only arrive by
	// polling.
	if !settle(func() bool { return tries.Load() > 0 }) {
		t.Fatal("the follower never tried to watch the log")
	}
	fmt.Fprint(wf, "starting\n")
	fmt.Fprintln(wf, readyText)
	if err := Wait(ctx, w, nil, hang); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, w.Done(), "Follow's EOF after cancel")
	if tries.Load() != 1 {
		t.Errorf("inotify tried %d times, want once (then polling)", tries.Load())
	}
	if tail := w.Tail(); fmt.Sprint(tail) != "[starting "+readyText+"]" {
		t.Errorf("Tail = %q", tail)
	}
}

// TestFollowUntilWithoutInotify proves that the polling fallback still ends
// at the last byte once finish is closed, and at once after ctx is done.
func TestFollowUntilWithoutInotify(t *testing.T) {
	withoutInotify(t)
	wf, rf := openLog(t)
	finish := make(chan struct{})
	w := Watch(FollowUntil(context.Background(), rf, time.Hour, finish), "never")
	fmt.Fprint(wf, "first\nlast words")
	close(finish)
	waitClosed(t, w.Done(), "FollowUntil's EOF after finish")
	if got := w.Tail(); fmt.Sprint(got) != "[first last words]" {
		t.Fatalf("tail %q, want [first last words]", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w2 := Watch(FollowUntil(ctx, rf, time.Hour, nil), "never")
	cancel()
	waitClosed(t, w2.Done(), "FollowUntil's EOF after cancel")
}

// settle waits until fn reports true (goroutines end on their own
// schedule).
func settle(fn func() bool) bool {
	deadline := time.Now().Add(hang)
	for !fn() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// TestFollowReleasesWatch proves that the inotify watch and the goroutine
// that reads the inotify descriptor are released on every way a follower
// ends, and that the descriptor itself stays for the next follower (its
// close would cost the next start a kernel grace period).
func TestFollowReleasesWatch(t *testing.T) {
	cases := []struct {
		name string
		end  func(cancel context.CancelFunc, finish chan struct{}, r io.ReadCloser)
	}{
		// The caller cancels ctx (the launcher once the daemon is ready).
		{"ctx cancelled", func(cancel context.CancelFunc, _ chan struct{}, _ io.ReadCloser) { cancel() }},
		// The writer finished (the daemon was reaped).
		{"finish closed", func(_ context.CancelFunc, finish chan struct{}, _ io.ReadCloser) { close(finish) }},
		// The caller closes the follower.
		{"Close", func(_ context.CancelFunc, _ chan struct{}, r io.ReadCloser) { r.Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := testHub(t)
			wf, rf := openLog(t)
			goroutines := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			finish := make(chan struct{})
			r := FollowUntil(ctx, rf, time.Hour, finish)
			seen := make(chan string, 1)
			w := Watch(r, "never", WithSink(func(l string) { seen <- l }))
			fmt.Fprintln(wf, "waiting")
			<-seen
			// Past that line the follower waits at the end of the file,
			// on one watch.
			if !settle(func() bool { n, _ := hubWatches(t, h); return n == 1 }) {
				n, ok := hubWatches(t, h)
				t.Fatalf("inotify descriptor %v, %d watches while waiting; want 1", ok, n)
			}
			tc.end(cancel, finish, r)
			waitClosed(t, w.Done(), "the follower's end")
			if n, ok := hubWatches(t, h); !ok || n != 0 {
				t.Errorf("inotify descriptor %v, %d watches after the end; want the descriptor and no watch", ok, n)
			}
			if !settle(func() bool { return runtime.NumGoroutine() <= goroutines }) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines: %d before, %d after:\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			// The next follower reuses the descriptor.
			before := h.ino
			r2 := Follow(context.Background(), rf, time.Hour)
			w2 := Watch(r2, "never", WithSink(func(l string) { seen <- l }))
			fmt.Fprintln(wf, "again")
			<-seen
			if !settle(func() bool { n, _ := hubWatches(t, h); return n == 1 }) {
				t.Fatal("the second follower set up no watch")
			}
			h.mu.Lock()
			same := h.ino == before
			h.mu.Unlock()
			if !same {
				t.Error("the second follower opened another inotify descriptor")
			}
			r2.Close()
			waitClosed(t, w2.Done(), "the second follower's end")
		})
	}
}

// TestFollowSharedInode proves that two followers of the same file (one
// inotify watch descriptor) are both woken, and that the watch stays until
// the last of them ends.
func TestFollowSharedInode(t *testing.T) {
	h := testHub(t)
	wf, rf1 := openLog(t)
	rf2, err := os.Open(rf1.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer rf2.Close()
	r1, r2 := Follow(context.Background(), rf1, time.Hour), Follow(context.Background(), rf2, time.Hour)
	seen1, seen2 := make(chan string, 4), make(chan string, 4)
	w1 := Watch(r1, "never", WithSink(func(l string) { seen1 <- l }))
	w2 := Watch(r2, "never", WithSink(func(l string) { seen2 <- l }))
	for i := 1; i <= 2; i++ {
		line := fmt.Sprintf("line %d", i)
		fmt.Fprintln(wf, line)
		for _, seen := range []chan string{seen1, seen2} {
			select {
			case l := <-seen:
				if l != line {
					t.Fatalf("read %q, want %q", l, line)
				}
			case <-time.After(hang):
				t.Fatalf("%q not read by both followers", line)
			}
		}
	}
	r1.Close()
	waitClosed(t, w1.Done(), "the first follower's end")
	// The second still follows: the shared watch descriptor stayed.
	fmt.Fprintln(wf, "line 3")
	select {
	case l := <-seen2:
		if l != "line 3" {
			t.Fatalf("read %q", l)
		}
	case <-time.After(hang):
		t.Fatal("the second follower stopped waking up when the first ended")
	}
	r2.Close()
	waitClosed(t, w2.Done(), "the second follower's end")
	if n, _ := hubWatches(t, h); n != 0 {
		t.Errorf("%d watches after both ended", n)
	}
}

// TestFollowClosedBeforeRead proves that Close before any wait makes Read
// return io.EOF without setting up a watch.
func TestFollowClosedBeforeRead(t *testing.T) {
	_, rf := openLog(t)
	r := Follow(context.Background(), rf, time.Hour)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after Close = %d, %v; want io.EOF", n, err)
	}
	if fl := r.(*follower); fl.w != nil {
		t.Fatal("a closed follower set up a watch")
	}
}

// TestFollowCloseBetweenReads proves that Close removes the watch also when
// no Read is running (a caller that stops reading and closes).
func TestFollowCloseBetweenReads(t *testing.T) {
	h := testHub(t)
	wf, rf := openLog(t)
	r := Follow(context.Background(), rf, time.Hour)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := r.Read(buf) // waits at the end of the file, on a watch
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	if !settle(func() bool { n, _ := hubWatches(t, h); return n == 1 }) {
		t.Fatal("the waiting Read set up no watch")
	}
	fmt.Fprint(wf, "data")
	if s := <-got; s != "data" {
		t.Fatalf("Read = %q", s)
	}
	if n, _ := hubWatches(t, h); n != 1 {
		t.Fatalf("%d watches between reads, want 1", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := hubWatches(t, h); n != 0 {
		t.Fatalf("%d watches after Close, want 0", n)
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after Close = %d, %v; want io.EOF", n, err)
	}
}
