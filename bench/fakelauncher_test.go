package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envFakeLauncher makes the test binary act as `fsd-launcher` (start, stop,
// version) with hugelgupf/p9's localfs server as the daemon, so the fsd
// target's code path (start's JSON line, the detached daemon, stop, the
// launcher timing) runs without fsd.
const envFakeLauncher = "FSDBENCH_FAKE_LAUNCHER"

// fakeLauncher implements the launcher's CLI contract; it returns the exit
// code.
func fakeLauncher(args []string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "fake launcher:", err); return 1 }
	if len(args) == 0 {
		return fail(fmt.Errorf("no subcommand"))
	}
	switch args[0] {
	case "version":
		fmt.Println("fsd-launcher fake")
		return 0
	case "start": // start --config F
		if len(args) != 3 || args[1] != "--config" {
			return fail(fmt.Errorf("usage: start --config F"))
		}
		keys, err := tomlStrings(args[2])
		if err != nil {
			return fail(err)
		}
		lf, err := listenFile(keys["socket_path"])
		if err != nil {
			return fail(err)
		}
		exe, _ := os.Executable()
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envRole+"="+roleP9Localfs, envDir+"="+keys["shared_dir"])
		cmd.ExtraFiles = []*os.File{lf}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return fail(err)
		}
		lf.Close()
		_ = json.NewEncoder(os.Stdout).Encode(startReply{PID: cmd.Process.Pid, Socket: keys["socket_path"]})
		return 0
	case "stop": // stop --pid N --socket P
		if len(args) != 5 {
			return fail(fmt.Errorf("usage: stop --pid N --socket P"))
		}
		pid, err := strconv.Atoi(args[2])
		if err != nil || pid <= 0 {
			return fail(fmt.Errorf("bad pid %q", args[2]))
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if st, err := procStatusField(pid, "State"); err != nil || strings.HasPrefix(st, "Z") {
				os.Remove(args[4])
				return 0
			}
		}
		return fail(fmt.Errorf("pid %d did not stop", pid))
	}
	return fail(fmt.Errorf("unknown subcommand %q", args[0]))
}

// tomlStrings reads the top-level `key = "value"` lines of a TOML file.
func tomlStrings(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			break
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			if s, err := strconv.Unquote(strings.TrimSpace(v)); err == nil {
				keys[strings.TrimSpace(k)] = s
			}
		}
	}
	return keys, sc.Err()
}

// TestHarnessLauncherPath runs the fsd target through a stand-in launcher:
// the harness must read start's JSON line, serve the workloads through the
// detached daemon, measure its RSS, stop it through `stop`, and time the
// start/stop cycles.
func TestHarnessLauncherPath(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envFakeLauncher, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := New(WithParams(smokeParams()), WithScratchDir(t.TempDir()), WithTargets(TFsd),
		WithWorkloads(WGetattr, WWalk), WithLauncher(exe)).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ti := res.Targets[TFsd]
	if !ti.Available || ti.PID <= 0 || ti.IdleRSS <= 0 {
		t.Fatalf("fsd target: %+v", ti)
	}
	for _, w := range res.Workloads {
		if m := w.Results[TFsd]; !m.ok() {
			t.Errorf("%s through the launcher: %+v", w.ID, m)
		}
	}
	lr := res.Launcher
	if lr == nil || lr.Error != "" || lr.Starts != smokeParams().LauncherStarts || lr.StartMedian <= 0 || lr.StopMedian <= 0 {
		t.Fatalf("launcher timing: %+v", lr)
	}
	if res.Machine.Launcher != "fake" {
		t.Errorf("launcher version %q", res.Machine.Launcher)
	}
	// stop must have taken the daemon down.
	if err := syscall.Kill(ti.PID, 0); err == nil {
		if st, _ := procStatusField(ti.PID, "State"); !strings.HasPrefix(st, "Z") {
			t.Errorf("daemon %d still runs after the run", ti.PID)
		}
	}
}
