package server

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockPair returns the two ends of a connected unix stream socket, both
// closed when the test ends.
func sockPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// readAfter writes b to c after d, and returns what p.Read got.
func readAfter(t *testing.T, p *pollReader, c net.Conn, d time.Duration, b string) {
	t.Helper()
	go func() {
		time.Sleep(d)
		c.Write([]byte(b))
	}()
	buf := make([]byte, 64)
	n, err := p.Read(buf)
	if err != nil || string(buf[:n]) != b {
		t.Fatalf("Read: %q, %v; want %q", buf[:n], err, b)
	}
	if p.polling || p.shared.polling.Load() {
		t.Fatal("the poll token is still taken after a read")
	}
}

// TestPollReader: data that arrives within the window is caught by
// polling, data that comes later by the netpoller; missPolls misses in a
// row stop polling for the next minSkip empty reads, then twice as many,
// and a caught poll ends the back-off. Reads return the bytes in order and
// io.EOF at the end whichever way they came.
func TestPollReader(t *testing.T) {
	var shared pollState
	srv, cli := sockPair(t)
	p := newPollReader(srv, rawConn(srv), time.Second, &shared)
	if p.rc == nil {
		t.Fatal("no raw access to a unix socket: polling is off")
	}

	shared.switched.Store(monotonic() - int64(2*soloQuiet)) // no other connection

	// Within a one-second window: caught, which clears the misses (a
	// read that did not poll would leave them, a miss add one).
	p.misses = 2
	readAfter(t, p, cli, time.Millisecond, "caught")
	if p.misses != 0 || p.skip != 0 {
		t.Fatalf("after a caught poll: misses %d, skip %d", p.misses, p.skip)
	}

	// Requests right behind each other, some caught on the first poll,
	// some on a later one: the token is given back every time.
	for i := range 200 {
		readAfter(t, p, cli, time.Duration(i%50)*time.Microsecond, "quick")
	}

	// A window far shorter than the wait: each read is a miss.
	p.window = 50 * time.Microsecond
	for i := 1; i < missPolls; i++ {
		readAfter(t, p, cli, 20*time.Millisecond, "late")
		if p.misses != i {
			t.Fatalf("after %d late reads: misses %d", i, p.misses)
		}
	}
	readAfter(t, p, cli, 20*time.Millisecond, "late")
	if p.misses != 0 || p.skip != minSkip || p.backoff != 2*minSkip {
		t.Fatalf("after %d misses: misses %d, skip %d, backoff %d; want 0, %d, %d",
			missPolls, p.misses, p.skip, p.backoff, minSkip, 2*minSkip)
	}
	// Skipped reads do not poll (nor count as misses).
	for i := range minSkip {
		readAfter(t, p, cli, time.Millisecond, "skipped")
		if p.skip != minSkip-1-i || p.misses != 0 {
			t.Fatalf("skipped read %d: skip %d, misses %d", i, p.skip, p.misses)
		}
	}
	// Polling again; a catch resets the back-off.
	p.window = time.Second
	readAfter(t, p, cli, time.Millisecond, "again")
	if p.backoff != minSkip || p.misses != 0 {
		t.Fatalf("after a catch: backoff %d, misses %d", p.backoff, p.misses)
	}
	// Data already there is read at once.
	cli.Write([]byte("ready"))
	time.Sleep(10 * time.Millisecond)
	buf := make([]byte, 64)
	if n, err := p.Read(buf); err != nil || string(buf[:n]) != "ready" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	if shared.polling.Load() {
		t.Fatal("the poll token is still taken")
	}
	// The peer's close ends the stream, polling or not.
	cli.Close()
	if n, err := p.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the peer closed: %d, %v; want io.EOF", n, err)
	}
}

// TestPollReaderClosed: closing the connection under a reader that waits
// ends the read with net.ErrClosed, as a plain net.Conn read does (the
// server's shutdown path).
func TestPollReaderClosed(t *testing.T) {
	var shared pollState
	srv, _ := sockPair(t)
	p := newPollReader(srv, rawConn(srv), MaxBusyPoll, &shared)
	done := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	srv.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(rpcTimeout):
		t.Fatal("Read did not return after Close")
	}
}

// TestPollStateSolo: one connection polls at a time, and none while
// another connection sent a frame within soloQuiet.
func TestPollStateSolo(t *testing.T) {
	var s pollState
	s.frame(1)
	if s.enter() {
		t.Fatal("entered right after the first frame (a switch from no connection)")
	}
	s.switched.Store(monotonic() - int64(2*soloQuiet))
	s.frame(1) // the same connection again: no switch
	if !s.enter() {
		t.Fatal("a lone connection may not poll")
	}
	if s.enter() {
		t.Fatal("two connections poll at once")
	}
	s.exit()
	s.frame(2) // another connection's frame
	if s.enter() {
		t.Fatal("polled while two connections are busy")
	}
	s.switched.Store(monotonic() - int64(2*soloQuiet))
	if !s.enter() {
		t.Fatal("did not poll once the other connection went quiet")
	}
	s.exit()
}

// TestWithBusyPoll: the option is clamped to [0, MaxBusyPoll], 0 leaves
// connections without polling, and a connection that is no socket
// (net.Pipe) never polls.
func TestWithBusyPoll(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{-time.Second, 0}, {0, 0}, {DefaultBusyPoll, DefaultBusyPoll}, {time.Hour, MaxBusyPoll},
	} {
		if got := New(nil, WithBusyPoll(c.in)).busyPoll; got != c.want {
			t.Errorf("WithBusyPoll(%v): %v, want %v", c.in, got, c.want)
		}
	}
	srv, _ := sockPair(t)
	if p := newPollReader(srv, rawConn(srv), 0, new(pollState)); p.rc != nil {
		t.Error("polling with a zero window")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if p := newPollReader(a, rawConn(a), DefaultBusyPoll, new(pollState)); p.rc != nil {
		t.Error("polling a net.Pipe")
	}
}
