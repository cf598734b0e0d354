// Command fakedaemon is the launcher tests' stand-in for a file daemon.
//
// It takes its listening socket as fd 3 (like fsd and virtiofsd with --fd),
// and behaves as its "-fake.*" arguments say. Every other argument is
// recorded (see -fake.args-file) and otherwise ignored, so the same binary
// serves as an external daemon (args from daemon.args) and as the built-in
// one (the launcher's generated "serve --fd 3 ..." argv, with the fake's
// flags appended from daemon.args).
//
// Modes:
//
//	-fake.list-fds=FILE      first thing in main: write "fd target" lines for
//	                         every open descriptor (raw syscalls, so nothing
//	                         the Go runtime opens later is listed)
//	-fake.args-file=FILE     write argv[1:] one per line
//	-fake.pid-file=FILE      write our pid
//	-fake.ready-line=TEXT    the readiness line (default "fsd: ready")
//	-fake.ready-after=DUR    print the readiness line after DUR (default 0)
//	-fake.never-ready        never print it
//	-fake.exit-early=CODE    before readiness, print -fake.message and exit CODE
//	-fake.message=TEXT       a line printed on stderr before readiness
//	-fake.stdout=TEXT        a line printed on stdout before readiness
//	-fake.long-line=N        print an N-byte line before readiness
//	-fake.garbage            print binary garbage (NULs, invalid UTF-8) before readiness
//	-fake.lines=N            print N lines "usage line I" before readiness
//	-fake.ignore-term        ignore SIGTERM (only SIGKILL stops us)
//	-fake.term-code=CODE     exit with CODE on SIGTERM (default: die by SIGTERM)
//	-fake.fork-child=FILE    start a child (own session, no death signal)
//	                         that holds the socket and outlives us; write its
//	                         pid to FILE before readiness
//	-fake.check-socket       exit 97 unless fd 3 is a listening unix socket
//	-fake.after-ready=TEXT   a stderr line printed right after readiness
//	-fake.ready-file=FILE    create FILE just before printing the readiness line
//	-fake.close-stderr       close stdout and stderr instead of getting ready
//	-fake.mntns-file=FILE    write the target of /proc/self/ns/mnt
//	-fake.9p                 answer one Tversion per connection with Rversion
//	-fake.one-conn=CODE      like virtiofsd, serve one connection: exit CODE
//	                         as soon as one is accepted
//
// After readiness it accepts connections on fd 3 and closes each at once
// (with -fake.9p, after answering a Tversion).
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	// Before anything else can open a descriptor.
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "-fake.list-fds="); ok {
			listFDs(v)
		}
	}

	opts := map[string]string{}
	for _, a := range os.Args[1:] {
		if rest, ok := strings.CutPrefix(a, "-fake."); ok {
			k, v, _ := strings.Cut(rest, "=")
			opts[k] = v
		}
	}
	if _, ok := opts["child"]; ok {
		child()
		return
	}
	if f := opts["args-file"]; f != "" {
		must(os.WriteFile(f, []byte(strings.Join(os.Args[1:], "\n")+"\n"), 0o600))
	}
	if f := opts["mntns-file"]; f != "" {
		ns, err := os.Readlink("/proc/self/ns/mnt")
		must(err)
		must(os.WriteFile(f, []byte(ns), 0o600))
	}
	if f := opts["pid-file"]; f != "" {
		must(os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o600))
	}
	if _, ok := opts["check-socket"]; ok {
		v, err := syscall.GetsockoptInt(3, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		if err != nil || v != 1 {
			fmt.Fprintf(os.Stderr, "fakedaemon: fd 3 is not a listening socket (%v)\n", err)
			os.Exit(97)
		}
	}

	sigs := make(chan os.Signal, 1)
	if _, ok := opts["ignore-term"]; ok {
		signal.Ignore(syscall.SIGTERM)
	} else if c, ok := opts["term-code"]; ok {
		code := atoi(c)
		signal.Notify(sigs, syscall.SIGTERM)
		go func() {
			<-sigs
			fmt.Fprintln(os.Stderr, "fakedaemon: terminating on SIGTERM")
			os.Exit(code)
		}()
	}

	if f := opts["fork-child"]; f != "" {
		forkChild(f)
	}
	if m, ok := opts["message"]; ok {
		fmt.Fprintln(os.Stderr, m)
	}
	if m, ok := opts["stdout"]; ok {
		fmt.Fprintln(os.Stdout, m)
	}
	if n, ok := opts["long-line"]; ok {
		b := []byte(strings.Repeat("x", atoi(n)) + "\n")
		_, _ = os.Stderr.Write(b)
	}
	if n, ok := opts["lines"]; ok {
		for i := 1; i <= atoi(n); i++ {
			fmt.Fprintf(os.Stderr, "usage line %d\n", i)
		}
	}
	if _, ok := opts["garbage"]; ok {
		_, _ = os.Stderr.Write([]byte("garbage\x00\xff\xfe\x01\x1b[31m\xc3\x28 end\n"))
	}
	if c, ok := opts["exit-early"]; ok {
		os.Exit(atoi(c))
	}
	if _, ok := opts["close-stderr"]; ok {
		_ = os.Stdout.Close()
		_ = os.Stderr.Close()
		serve(false)
	}
	if _, ok := opts["never-ready"]; !ok {
		if d, ok := opts["ready-after"]; ok {
			dur, err := time.ParseDuration(d)
			must(err)
			time.Sleep(dur)
		}
		if f := opts["ready-file"]; f != "" {
			must(os.WriteFile(f, nil, 0o600))
		}
		line := "fsd: ready"
		if l, ok := opts["ready-line"]; ok {
			line = l
		}
		fmt.Fprintf(os.Stderr, "fakedaemon[%d]: %s\n", os.Getpid(), line)
		if m, ok := opts["after-ready"]; ok {
			fmt.Fprintln(os.Stderr, m)
		}
	}
	if c, ok := opts["one-conn"]; ok {
		l, err := net.FileListener(os.NewFile(3, "listener"))
		must(err)
		_, err = l.Accept()
		must(err)
		fmt.Fprintln(os.Stderr, "fakedaemon: got my one connection, exiting")
		os.Exit(atoi(c))
	}
	_, nineP := opts["9p"]
	serve(nineP)
}

// serve accepts connections on fd 3 and closes each at once, after
// answering a Tversion when nineP is set; with no usable fd 3 it just waits
// to be signalled.
func serve(nineP bool) {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		select {}
	}
	for {
		c, err := l.Accept()
		if err != nil {
			select {}
		}
		if nineP {
			go answerVersion(c)
			continue
		}
		_ = c.Close()
	}
}

// answerVersion reads one 9P message and, when it is a Tversion, answers
// with an Rversion for "9P2000.L" and the client's msize.
func answerVersion(c net.Conn) {
	defer c.Close()
	var hdr [7]byte // size[4] type[1] tag[2]
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size := binary.LittleEndian.Uint32(hdr[:4])
	if hdr[4] != 100 || size < 13 || size > 8192 { // Tversion
		return
	}
	body := make([]byte, size-7)
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	msize := binary.LittleEndian.Uint32(body[:4])
	const version = "9P2000.L"
	out := binary.LittleEndian.AppendUint32(nil, uint32(7+4+2+len(version)))
	out = append(out, 101, hdr[5], hdr[6]) // Rversion, same tag
	out = binary.LittleEndian.AppendUint32(out, msize)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(version)))
	out = append(out, version...)
	_, _ = c.Write(out)
	// Wait for the client to hang up.
	_, _ = io.Copy(io.Discard, c)
}

// child is the forked grandchild: it holds fd 3 and waits for a signal.
func child() {
	signal.Ignore(syscall.SIGHUP)
	serve(false)
}

func forkChild(pidFile string) {
	self, err := os.Executable()
	must(err)
	cmd := exec.Command(self, "-fake.child")
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "listener")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	must(cmd.Start())
	must(os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600))
	// Never waited on here: the child outlives us on purpose.
}

// listFDs writes one "fd target" line per open descriptor, leaving out the
// descriptor it reads /proc/self/fd with.
func listFDs(out string) {
	dfd, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	must(err)
	var lines []string
	buf := make([]byte, 8192)
	for {
		n, err := syscall.ReadDirent(dfd, buf)
		must(err)
		if n == 0 {
			break
		}
		var names []string
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			if name == strconv.Itoa(dfd) {
				continue
			}
			lb := make([]byte, 256)
			ln, _ := syscall.Readlink("/proc/self/fd/"+name, lb)
			if ln < 0 {
				ln = 0
			}
			lines = append(lines, name+" "+string(lb[:ln]))
		}
	}
	_ = syscall.Close(dfd)
	fd, err := syscall.Open(out, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	must(err)
	_, err = syscall.Write(fd, []byte(strings.Join(lines, "\n")+"\n"))
	must(err)
	_ = syscall.Close(fd)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	must(err)
	return n
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakedaemon:", err)
		os.Exit(98)
	}
}
