package bench

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
)

// tracer is `strace -c` attached to a server for the whole run: it counts
// the server's system calls, so the report can give syscalls per
// operation (profiling only; it slows the server down many times).
type tracer struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
	err  error
}

// attachStrace starts `strace -f -c -p pid -o out`. It returns once strace
// has attached (it prints nothing useful before, so this waits a moment).
func attachStrace(pid int, out string) (*tracer, error) {
	bin, err := exec.LookPath("strace")
	if err != nil {
		return nil, errors.Wrap(err, "find strace (apt-get install strace)")
	}
	cmd := exec.Command(bin, "-f", "-c", "-p", strconv.Itoa(pid), "-o", out)
	if err := cmd.Start(); err != nil {
		return nil, errors.Wrapf(err, "start strace on pid %d", pid)
	}
	t := &tracer{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		t.err = cmd.Wait()
		close(t.done)
	}()
	// Attaching to every thread takes strace a few milliseconds.
	select {
	case <-t.done:
		return nil, errors.Wrapf(t.err, "strace on pid %d exited", pid)
	case <-time.After(300 * time.Millisecond):
	}
	return t, nil
}

// detach stops strace (SIGINT: it detaches and writes its summary) and
// returns the calls per system call.
func (t *tracer) detach() (map[string]int64, error) {
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-t.done:
	case <-time.After(10 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.done
	}
	return parseStraceSummary(t.out)
}

// parseStraceSummary reads `strace -c` output: the calls column of every
// row, keyed by syscall ("total" included).
func parseStraceSummary(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.Wrapf(err, "open %s", path)
	}
	defer f.Close()
	counts := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// % time, seconds, usecs/call, calls, [errors], syscall
		if len(fields) != 5 && len(fields) != 6 {
			continue
		}
		if _, err := strconv.ParseFloat(fields[0], 64); err != nil {
			continue
		}
		calls, err := strconv.ParseInt(fields[3], 10, 64)
		if err != nil {
			continue
		}
		counts[fields[len(fields)-1]] = calls
	}
	if err := sc.Err(); err != nil {
		return nil, errors.Wrapf(err, "read %s", path)
	}
	if _, ok := counts["total"]; !ok {
		return nil, errors.Errorf("%s: no strace summary", path)
	}
	return counts, nil
}
