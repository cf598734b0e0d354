//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// results turns the script's output into result lines: it times each step
// (from its BEGIN line to its STEP line) and writes result lines to the
// results port and, like every other line, to the console.
type results struct {
	console io.Writer
	port    *os.File // nil until open
	begun   map[string]time.Time
	steps   int
	failed  int
	broken  []string // protocol problems: a STEP without BEGIN, a BEGIN never ended
}

// open opens the results port and switches off output processing, so lines
// arrive as written (no "\r\n").
func (r *results) open(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return errors.Wrapf(err, "open results port %s", path)
	}
	if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		t.Oflag &^= unix.OPOST
		if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
			f.Close()
			return errors.Wrapf(err, "set raw output on %s", path)
		}
	}
	r.port = f
	r.begun = map[string]time.Time{}
	return nil
}

// emit writes one result line to the results port and the console.
func (r *results) emit(line string) {
	fmt.Fprintln(r.console, line)
	if r.port != nil {
		// One write per line: the host reads whole lines.
		if _, err := r.port.Write([]byte(line + "\n")); err != nil {
			fmt.Fprintf(r.console, "e2e-guest: write results: %v\n", err)
		}
	}
}

// scan reads the script's stdout until EOF.
func (r *results) scan(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		r.line(sc.Text(), time.Now())
	}
	if err := sc.Err(); err != nil {
		r.broken = append(r.broken, fmt.Sprintf("reading script output: %v", err))
		_, _ = io.Copy(io.Discard, out)
	}
}

// line handles one line of script output read at time now.
func (r *results) line(l string, now time.Time) {
	switch {
	case strings.HasPrefix(l, guestcfg.PrefixBegin):
		name := strings.TrimSpace(strings.TrimPrefix(l, guestcfg.PrefixBegin))
		r.begun[name] = now
		fmt.Fprintln(r.console, l)
	case strings.HasPrefix(l, guestcfg.PrefixStep):
		fields := strings.SplitN(strings.TrimPrefix(l, guestcfg.PrefixStep), " ", 3)
		name, status, detail := fields[0], "", ""
		if len(fields) > 1 {
			status = fields[1]
		}
		if len(fields) > 2 {
			detail = fields[2]
		}
		var elapsed time.Duration
		if t, ok := r.begun[name]; ok {
			elapsed = now.Sub(t)
			delete(r.begun, name)
		} else {
			r.broken = append(r.broken, fmt.Sprintf("step %q ended without BEGIN", name))
		}
		r.steps++
		switch status {
		case guestcfg.StatusOK, guestcfg.StatusSkip:
		default:
			r.failed++
		}
		r.emit(fmt.Sprintf("%s%s %s ns=%d %s", guestcfg.PrefixStep, name, status, elapsed.Nanoseconds(), detail))
	case strings.HasPrefix(l, guestcfg.PrefixSum):
		r.emit(l)
	default:
		fmt.Fprintln(r.console, l)
	}
}

// finish writes the final line. reason is empty when the run itself went
// well; the run still fails for a failed step or a step left open.
func (r *results) finish(reason string, workload, boot time.Duration) {
	for name := range r.begun {
		r.broken = append(r.broken, fmt.Sprintf("step %q never ended", name))
	}
	if reason != "" {
		r.broken = append(r.broken, reason)
	}
	head := guestcfg.LineDone
	if len(r.broken) > 0 || r.failed > 0 || r.steps == 0 {
		head = guestcfg.LineFailed
	}
	line := fmt.Sprintf("%s steps=%d failed=%d ns=%d boot_ns=%d", head, r.steps, r.failed,
		workload.Nanoseconds(), boot.Nanoseconds())
	if len(r.broken) > 0 {
		line += " " + strings.Join(r.broken, "; ")
	}
	r.emit(line)
	if r.port != nil {
		_ = r.port.Sync()
	}
}
