package readiness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

const readyText = "fsd: ready"

// hang is long enough that reaching it means a bug, not a slow machine.
const hang = 60 * time.Second

// waitClosed fails the test if ch is not closed within hang.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hang):
		t.Fatalf("%s never happened", what)
	}
}

// notReady asserts err is a *NotReadyError with the given reason and
// returns it.
func notReady(t *testing.T, err error, reason error) *NotReadyError {
	t.Helper()
	var nre *NotReadyError
	if !errors.As(err, &nre) {
		t.Fatalf("Wait = %v, want a *NotReadyError", err)
	}
	if !errors.Is(err, reason) {
		t.Fatalf("Wait = %v, want reason %v", err, reason)
	}
	return nre
}

func TestWaitReady(t *testing.T) {
	cases := []struct {
		name string
		r    func() io.Reader
	}{
		// The ready line is already in the stream when Wait starts.
		{"early", func() io.Reader { return strings.NewReader("starting\n" + readyText + "\n") }},
		// The ready line is split across many reads.
		{"split across reads", func() io.Reader {
			return iotest.OneByteReader(strings.NewReader("noise\nxx " + readyText + " yy\n"))
		}},
		// The ready line is the last line, without a newline.
		{"last line without newline", func() io.Reader { return strings.NewReader("a\n" + readyText) }},
		// The ready line comes after a huge garbage line.
		{"after huge line", func() io.Reader {
			return &lazyLine{n: 1 << 20, tail: []byte("\x00\xff\n" + readyText + "\n")}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := Watch(tc.r(), readyText)
			if err := Wait(context.Background(), w, nil, hang); err != nil {
				t.Fatalf("Wait = %v", err)
			}
			if !strings.Contains(w.ReadyLine(), readyText) {
				t.Errorf("ReadyLine = %q", w.ReadyLine())
			}
			waitClosed(t, w.Done(), "EOF")
			if err := w.Err(); err != nil {
				t.Errorf("Err = %v after a clean EOF", err)
			}
		})
	}
}

// TestWaitReadyLate: Wait is already blocked when the ready line is
// written.
func TestWaitReadyLate(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	seen := make(chan string, 10)
	w := Watch(pr, readyText, WithSink(func(l string) { seen <- l }))
	res := make(chan error, 1)
	go func() { res <- Wait(context.Background(), w, nil, hang) }()
	fmt.Fprintln(pw, "loading")
	if l := <-seen; l != "loading" {
		t.Fatalf("sink saw %q", l)
	}
	select {
	case err := <-res:
		t.Fatalf("Wait returned %v before the ready line", err)
	default:
	}
	fmt.Fprintln(pw, readyText)
	if err := <-res; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	pw.Close()
	waitClosed(t, w.Done(), "EOF")
}

func TestWaitTimeout(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	defer pr.Close()
	w := Watch(pr, readyText)
	fmt.Fprintln(pw, "still loading")
	err := Wait(context.Background(), w, nil, 50*time.Millisecond)
	nre := notReady(t, err, ErrTimeout)
	if fmt.Sprint(nre.Tail) != "[still loading]" {
		t.Errorf("Tail = %q", nre.Tail)
	}
	if nre.Waited <= 0 {
		t.Errorf("Waited = %v", nre.Waited)
	}
	if !strings.Contains(err.Error(), "still loading") {
		t.Errorf("error %q does not show the last lines", err)
	}
}

func TestWaitContextCancelled(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	defer pr.Close()
	w := Watch(pr, readyText)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- Wait(ctx, w, nil, hang) }()
	cancel()
	notReady(t, <-res, context.Canceled)
}

func TestWaitExitedFirst(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	w := Watch(pr, readyText)
	exited := make(chan struct{})
	// The daemon writes its complaint, closes stderr by exiting.
	go func() {
		fmt.Fprintln(pw, "starting")
		fmt.Fprintln(pw, "fatal: cannot open /nonexistent")
		pw.Close()
		close(exited)
	}()
	err := Wait(context.Background(), w, exited, hang)
	nre := notReady(t, err, ErrExited)
	if fmt.Sprint(nre.Tail) != "[starting fatal: cannot open /nonexistent]" {
		t.Errorf("Tail = %q; the daemon's last words must be there", nre.Tail)
	}
	if !strings.Contains(err.Error(), "fatal: cannot open /nonexistent") {
		t.Errorf("error %q does not show the last lines", err)
	}
}

// TestWaitExitedStreamOpen: the child exited but something else still
// holds its stderr open; Wait reports the exit after a bounded drain.
func TestWaitExitedStreamOpen(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	defer pr.Close()
	w := Watch(pr, readyText)
	exited := make(chan struct{})
	close(exited)
	notReady(t, Wait(context.Background(), w, exited, hang), ErrExited)
}

func TestWaitStreamClosed(t *testing.T) {
	cases := []struct {
		name   string
		exited func() <-chan struct{}
	}{
		// The caller does not track the child.
		{"untracked child", func() <-chan struct{} { return nil }},
		// The child closed stderr but keeps running.
		{"child still running", func() <-chan struct{} { return make(chan struct{}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := Watch(strings.NewReader("daemonizing\n"), readyText)
			nre := notReady(t, Wait(context.Background(), w, tc.exited(), hang), ErrStreamClosed)
			if fmt.Sprint(nre.Tail) != "[daemonizing]" {
				t.Errorf("Tail = %q", nre.Tail)
			}
		})
	}
}

// TestWaitStreamClosedThenExit: EOF first, then the exit status arrives;
// the exit is what gets reported.
func TestWaitStreamClosedThenExit(t *testing.T) {
	w := Watch(strings.NewReader("bye\n"), readyText)
	waitClosed(t, w.Done(), "EOF")
	exited := make(chan struct{})
	res := make(chan error, 1)
	go func() { res <- Wait(context.Background(), w, exited, hang) }()
	close(exited)
	notReady(t, <-res, ErrExited)
}

func TestWaitReadyAndExitOrder(t *testing.T) {
	t.Run("ready first", func(t *testing.T) {
		// The daemon printed the ready line, then died: it was ready.
		w := Watch(strings.NewReader(readyText+"\n"), readyText)
		waitClosed(t, w.Ready(), "ready")
		exited := make(chan struct{})
		close(exited)
		if err := Wait(context.Background(), w, exited, hang); err != nil {
			t.Fatalf("Wait = %v; the ready line came first", err)
		}
	})
	t.Run("exit first", func(t *testing.T) {
		// The exit is seen while the ready line is not yet read: it
		// arrives later (written by something that outlived the child)
		// and does not turn the failure into success.
		pr, pw := io.Pipe()
		defer pr.Close()
		w := Watch(pr, readyText)
		exited := make(chan struct{})
		close(exited)
		err := Wait(context.Background(), w, exited, hang)
		fmt.Fprintln(pw, readyText)
		pw.Close()
		notReady(t, err, ErrExited)
		waitClosed(t, w.Ready(), "late ready line")
	})
}

func TestSinkSeesEveryLine(t *testing.T) {
	var mu sync.Mutex
	var got []string
	in := "one\ntwo\n" + readyText + "\nafter 1\nafter 2\n"
	w := Watch(strings.NewReader(in), readyText, WithSink(func(l string) {
		mu.Lock()
		got = append(got, l)
		mu.Unlock()
	}), WithTailLines(2))
	if err := Wait(context.Background(), w, nil, hang); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, w.Done(), "EOF")
	mu.Lock()
	defer mu.Unlock()
	want := []string{"one", "two", readyText, "after 1", "after 2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sink saw %q, want %q", got, want)
	}
	if tail := w.Tail(); fmt.Sprint(tail) != "[after 1 after 2]" {
		t.Errorf("Tail = %q, want the last 2 lines", tail)
	}
}

func TestWatchMaxLine(t *testing.T) {
	// A 10-byte limit: the ready text is cut off the long line, so it
	// cannot match there; the short line matches.
	in := "0123456789 " + readyText + "\n" + readyText + "\n"
	w := Watch(strings.NewReader(in), readyText, WithMaxLine(10))
	if err := Wait(context.Background(), w, nil, hang); err != nil {
		t.Fatal(err)
	}
	if w.ReadyLine() != readyText {
		t.Errorf("ReadyLine = %q; the truncated line must not match", w.ReadyLine())
	}
}

func TestWatchReadError(t *testing.T) {
	boom := errors.New("boom")
	w := Watch(&errAfter{[]byte("partial"), boom}, readyText)
	nre := notReady(t, Wait(context.Background(), w, nil, hang), ErrStreamClosed)
	if !errors.Is(w.Err(), boom) {
		t.Errorf("Err = %v, want %v", w.Err(), boom)
	}
	if fmt.Sprint(nre.Tail) != "[partial]" {
		t.Errorf("Tail = %q", nre.Tail)
	}
}

// startDaemon runs a shell script as a fake daemon with stderr on a pipe,
// the way the launcher does, and closes exited when it has been reaped.
func startDaemon(t *testing.T, script string) (*Watcher, <-chan struct{}, *exec.Cmd) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", script)
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	w := Watch(pr, readyText)
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		<-w.Done()
		pr.Close()
	})
	return w, exited, cmd
}

func TestWaitRealProcess(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		w, _, _ := startDaemon(t, `echo starting >&2; echo "`+readyText+`" >&2; exec sleep 60`)
		if err := Wait(context.Background(), w, nil, hang); err != nil {
			t.Fatalf("Wait = %v", err)
		}
	})
	t.Run("dies", func(t *testing.T) {
		w, exited, cmd := startDaemon(t, `echo starting >&2; echo "fatal: bind: address in use" >&2; exit 3`)
		err := Wait(context.Background(), w, exited, hang)
		nre := notReady(t, err, ErrExited)
		if fmt.Sprint(nre.Tail) != "[starting fatal: bind: address in use]" {
			t.Errorf("Tail = %q", nre.Tail)
		}
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Errorf("exit code %d, want 3", code)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		w, exited, _ := startDaemon(t, `echo loading >&2; exec sleep 60`)
		notReady(t, Wait(context.Background(), w, exited, 100*time.Millisecond), ErrTimeout)
	})
}

func TestFollowGoroutine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	wf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	// An earlier run's lines, before the caller's starting point.
	fmt.Fprintln(wf, "old run: "+readyText)
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if _, err := rf.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan string, 10)
	w := Watch(Follow(ctx, rf, time.Millisecond), readyText, WithSink(func(l string) { seen <- l }))
	fmt.Fprint(wf, "new run: star")
	fmt.Fprint(wf, "ting\n")
	if l := <-seen; l != "new run: starting" {
		t.Fatalf("first line %q; Follow must start at the caller's offset and join partial writes", l)
	}
	fmt.Fprintln(wf, "new run: "+readyText)
	if err := Wait(ctx, w, nil, hang); err != nil {
		t.Fatal(err)
	}
	if w.ReadyLine() != "new run: "+readyText {
		t.Errorf("ReadyLine = %q", w.ReadyLine())
	}
	cancel()
	waitClosed(t, w.Done(), "Follow's EOF after cancel")
}

func TestFollowProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	path := filepath.Join(t.TempDir(), "daemon.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := Watch(Follow(ctx, rf, 5*time.Millisecond), readyText)
	// A detached daemon appending to its log, a line at a time.
	cmd := exec.Command(sh, "-c", `for i in 1 2 3; do echo "line $i" >> "$1"; sleep 0.05; done; echo "`+readyText+`" >> "$1"`, "sh", path)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := Wait(ctx, w, nil, hang); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, w.Done(), "Follow's EOF after cancel")
	if tail := w.Tail(); fmt.Sprint(tail) != "[line 1 line 2 line 3 "+readyText+"]" {
		t.Errorf("Tail = %q", tail)
	}
}

func TestFollowCancelledReturnsEOF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("unread\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r := Follow(ctx, rf, 0)
	buf := make([]byte, 3)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read after cancel = %d, %v; want io.EOF", n, err)
	}
	// A Read blocked at the end of the file returns when ctx is done.
	ctx2, cancel2 := context.WithCancel(context.Background())
	r2 := Follow(ctx2, rf, time.Hour)
	if _, err := io.ReadAll(io.LimitReader(r2, 4)); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := r2.Read(buf)
		res <- err
	}()
	cancel2()
	select {
	case err := <-res:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("blocked Read after cancel = %v, want io.EOF", err)
		}
	case <-time.After(hang):
		t.Fatal("a blocked Read did not return after cancel")
	}
}

func TestNotReadyErrorMessage(t *testing.T) {
	cases := []struct {
		name string
		err  *NotReadyError
		want []string
	}{
		// Reason, time and each last line appear.
		{"with tail", &NotReadyError{Reason: ErrExited, Waited: 1500 * time.Millisecond, Tail: []string{"a", "b"}},
			[]string{ErrExited.Error(), "1.5s", "\ta", "\tb"}},
		// An empty tail says the daemon wrote nothing.
		{"no tail", &NotReadyError{Reason: ErrTimeout, Waited: time.Second},
			[]string{ErrTimeout.Error(), "wrote nothing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			if !errors.Is(tc.err, tc.err.Reason) {
				t.Error("Unwrap does not reach Reason")
			}
		})
	}
}

// TestFollowUntilEndsAtLastByte proves that once the writer has finished,
// FollowUntil returns what was written and then io.EOF instead of polling
// on: a detached daemon that exits before it is ready is reported at once.
func TestFollowUntilEndsAtLastByte(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	finish := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := Watch(FollowUntil(ctx, r, time.Hour, finish), "never")
	if _, err := f.WriteString("first\nlast words"); err != nil {
		t.Fatal(err)
	}
	close(finish)
	select {
	case <-w.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("FollowUntil kept polling after finish was closed")
	}
	got := w.Tail()
	if len(got) != 2 || got[0] != "first" || got[1] != "last words" {
		t.Fatalf("tail %q, want [first, last words]", got)
	}
}
