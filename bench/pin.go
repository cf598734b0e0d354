package bench

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// NoPin disables CPU pinning where a CPU number is expected.
const NoPin = -1

// PinProcess makes every thread of this process run on cpu only. Affinity
// is per thread and Go starts threads before main, so it cannot be set for
// the whole process in place: PinProcess sets it on the calling thread and
// re-executes the program from that thread (exec keeps the thread's
// affinity, and every thread the new image starts inherits it). It returns
// nil at once when the process already runs on cpu alone, and does not
// return on success otherwise.
func PinProcess(cpu int) error {
	if cpu == NoPin {
		return nil
	}
	var cur unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cur); err != nil {
		return errors.Wrap(err, "sched_getaffinity")
	}
	if cur.Count() == 1 && cur.IsSet(cpu) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return errors.Wrap(err, "find own executable")
	}
	runtime.LockOSThread() // the exec must come from the pinned thread
	set := cpuSet(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return errors.Wrapf(err, "sched_setaffinity cpu %d", cpu)
	}
	err = unix.Exec(exe, os.Args, os.Environ())
	runtime.UnlockOSThread()
	return errors.Wrapf(err, "re-exec %s pinned to cpu %d", exe, cpu)
}

func cpuSet(cpu int) unix.CPUSet {
	var set unix.CPUSet
	set.Set(cpu)
	return set
}

// startPinned starts cmd with the child bound to cpu (NoPin: unbound). The
// fork happens on a locked OS thread pinned to cpu, and the child inherits
// that affinity; the goroutine returns without unlocking, so the Go runtime
// ends the thread instead of handing its affinity to other goroutines.
func startPinned(cmd *exec.Cmd, cpu int) error {
	if cpu == NoPin {
		return errors.Wrapf(cmd.Start(), "start %s", cmd.Path)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		set := cpuSet(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- errors.Wrapf(err, "sched_setaffinity cpu %d", cpu)
			return
		}
		errc <- errors.Wrapf(cmd.Start(), "start %s", cmd.Path)
	}()
	return <-errc
}

// cpusAllowed returns the Cpus_allowed_list of a process ("0", "0-1").
func cpusAllowed(pid int) (string, error) {
	v, err := procStatusField(pid, "Cpus_allowed_list")
	return v, err
}

// procStatusKiB returns a "kB" field of /proc/PID/status (VmRSS, VmHWM) in
// KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	v, err := procStatusField(pid, field)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return 0, errors.Wrapf(err, "parse %s of pid %d: %q", field, pid, v)
	}
	return n, nil
}

// ErrNoField is returned when /proc/PID/status lacks a field.
var ErrNoField = errors.New("no such field in /proc/PID/status")

func procStatusField(pid int, field string) (string, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	b, err := os.ReadFile(path)
	if err != nil {
		return "", errors.Wrapf(err, "read %s", path)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.Wrapf(ErrNoField, "%s in %s", field, path)
}

// resetPeakRSS resets VmHWM of pid to its current RSS (clear_refs 5).
func resetPeakRSS(pid int) error {
	path := "/proc/" + strconv.Itoa(pid) + "/clear_refs"
	return errors.Wrapf(os.WriteFile(path, []byte("5"), 0), "write %s", path)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// cpuSeconds returns the user+system CPU time pid has used, all threads.
func cpuSeconds(pid int) (float64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, errors.Wrapf(err, "read %s", path)
	}
	// The command name may hold spaces: fields start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.Errorf("%s: malformed", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ... utime(14) stime(15), i.e. f[11], f[12].
	if len(f) < 13 {
		return 0, errors.Errorf("%s: %d fields", path, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.Errorf("%s: bad utime/stime %q %q", path, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}
