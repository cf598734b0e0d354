//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process seen in /proc.
type proc struct {
	PID     int
	PPID    int
	State   string // R, S, Z, ...
	Cmdline string // NUL separators turned into spaces
}

// readProc reads one process; false when it is gone.
func readProc(pid int) (proc, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return proc{}, false
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	return proc{
		PID:     pid,
		PPID:    ppid,
		State:   f[0],
		Cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")),
	}, true
}

// allProcesses reads /proc, leaving out this process and processes that
// exit while it reads.
func allProcesses() []proc {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// processesMentioning lists the live processes (other than this one) whose
// command line contains s. Every process of a run names the run's
// directory (QEMU its sockets, the daemon its export or socket), so this
// finds whatever a run left behind, also when it forked. Zombies have no
// command line: they show up through childrenOf when they are ours.
func processesMentioning(s string) []proc {
	var out []proc
	for _, p := range allProcesses() {
		if strings.Contains(p.Cmdline, s) {
			out = append(out, p)
		}
	}
	return out
}

// childrenOf lists the direct children of pid, zombies included.
func childrenOf(pid int) []proc {
	var out []proc
	for _, p := range allProcesses() {
		if p.PPID == pid {
			out = append(out, p)
		}
	}
	return out
}

// descendants lists the children of pid, their children, and so on.
func descendants(pid int) []proc {
	all := allProcesses()
	var out []proc
	parents := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for _, p := range all {
			if parents[p.PPID] && !parents[p.PID] {
				parents[p.PID] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

// processAlive reports whether p still runs: not a zombie, and not a
// reused PID (same command line).
func processAlive(p proc) bool {
	now, ok := readProc(p.PID)
	return ok && now.State != "Z" && now.State != "X" && now.Cmdline == p.Cmdline
}

// waitGone waits up to d for every process mentioning s to disappear and
// returns those still there.
func waitGone(s string, d time.Duration) []proc {
	deadline := time.Now().Add(d)
	for {
		left := processesMentioning(s)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killAll SIGKILLs the given processes (leftovers of a run found by
// processesMentioning: ours by construction) so a failed test leaves
// nothing running.
func killAll(ps []proc) {
	for _, p := range ps {
		if p.PID > 1 && processAlive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL) // ESRCH: already gone
		}
	}
}
