package launcher

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"syscall"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// procStat is what the launcher needs from /proc/PID/stat.
type procStat struct {
	State     byte   // field 3: R, S, D, Z, ...
	PPID      int    // field 4
	StartTime uint64 // field 22: clock ticks after boot; with the PID, a process identity
}

// errNoProcess reports that /proc has no entry for the PID.
var errNoProcess = errors.New("no such process")

// readProcStat parses /proc/PID/stat. A missing entry is errNoProcess.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return procStat{}, errors.Wrapf(errNoProcess, "pid %d", pid)
		}
		return procStat{}, errors.Wrapf(err, "read /proc/%d/stat", pid)
	}
	return parseProcStat(pid, b)
}

// parseProcStat parses the text of /proc/PID/stat. The command name (field
// 2) may hold spaces and parentheses, so fields are counted after the last
// ')'.
func parseProcStat(pid int, b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3; field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, errors.Wrapf(err, "/proc/%d/stat: ppid", pid)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, errors.Wrapf(err, "/proc/%d/stat: starttime", pid)
	}
	return procStat{State: f[0][0], PPID: ppid, StartTime: start}, nil
}

// allPIDs lists the processes in /proc.
func allPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, errors.Wrap(err, "read /proc")
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// descendantsOf returns the live descendants of pid (children, their
// children, ...) from one scan of /proc, with their stat.
func descendantsOf(pid int) (map[int]procStat, error) {
	pids, err := allPIDs()
	if err != nil {
		return nil, err
	}
	byParent := map[int][]int{}
	stats := map[int]procStat{}
	for _, p := range pids {
		st, err := readProcStat(p)
		if err != nil {
			continue // exited while we looked
		}
		stats[p] = st
		byParent[st.PPID] = append(byParent[st.PPID], p)
	}
	out := map[int]procStat{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range byParent[p] {
			if _, seen := out[c]; seen || c == pid {
				continue
			}
			out[c] = stats[c]
			queue = append(queue, c)
		}
	}
	return out, nil
}

// closeExecFrom marks every descriptor >= minFD of this process
// close-on-exec, the way runc's CloseExecFrom does. Go opens its own
// descriptors with O_CLOEXEC, but a descriptor this process inherited from
// its parent, or one a library opened without the flag, would otherwise
// reach the daemon: exec.Cmd only closes what is marked. Descriptors handed
// over through ExtraFiles are unaffected (the child's dup2 clears the flag).
func closeExecFrom(minFD int) error {
	err := unix.CloseRange(uint(minFD), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return errors.Wrap(err, "close_range(CLOSE_RANGE_CLOEXEC)")
	}
	// Kernels before 5.11: walk /proc/self/fd.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return errors.Wrap(err, "read /proc/self/fd")
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < minFD {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return errors.Wrapf(err, "fcntl(%d, F_SETFD, FD_CLOEXEC)", fd)
		}
	}
	return nil
}

// holdsInode reports whether process pid has a descriptor on the socket
// with sockfs inode ino (/proc/PID/fd/N -> "socket:[ino]").
func holdsInode(pid int, ino uint64) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
			return true
		}
	}
	return false
}
