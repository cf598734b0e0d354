//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// virtiofsdExample is the documented example the virtio-fs runs copy.
const virtiofsdExample = "../testdata/virtiofsd.toml"

// TestVirtiofsdExampleConfig: testdata/virtiofsd.toml is valid once its
// paths exist, describes virtiofsd as the e2e test runs it, and comments
// every key.
func TestVirtiofsdExampleConfig(t *testing.T) {
	raw, err := os.ReadFile(virtiofsdExample)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	// The example's paths do not exist here: point them at the temp dir,
	// the way the e2e test does.
	text := string(raw)
	for key, val := range map[string]string{
		"socket_path": filepath.Join(dir, "vfs.sock"),
		"shared_dir":  shared,
		"log_file":    filepath.Join(dir, "vfs.log"),
	} {
		re := regexp.MustCompile(`(?m)^` + key + ` = ".*"$`)
		if !re.MatchString(text) {
			t.Fatalf("example has no %s line", key)
		}
		text = re.ReplaceAllString(text, key+` = "`+val+`"`)
	}
	cfg, err := config.Parse([]byte(text), virtiofsdExample)
	if err != nil {
		t.Fatalf("example does not validate: %v", err)
	}
	if cfg.IsBuiltinDaemon() || cfg.Daemon.Path != virtiofsdPath {
		t.Errorf("daemon.path = %q, want %s", cfg.Daemon.Path, virtiofsdPath)
	}
	if cfg.ReadOnly || len(cfg.Mounts) > 0 {
		t.Error("virtiofsd has no read-only mode and one export: readonly and [[mount]] must stay unset")
	}
	if !strings.Contains("virtio_session_mount: "+virtiofsdReady+"...", cfg.Daemon.ReadyLine) {
		t.Errorf("ready_line %q is not part of virtiofsd's line", cfg.Daemon.ReadyLine)
	}
	args, err := cfg.Expand(3)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	// One row per argument the launcher must pass, and why.
	for _, want := range []string{
		"--fd=3",            // the pre-opened socket, not --socket-path
		"source=" + shared,  // the shared_dir placeholder filled
		"sandbox=namespace", // the forking mode the stop test covers
		"cache=auto",        // the documented cache mode
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args %q lack %q", joined, want)
		}
	}
	if strings.Contains(joined, "{") {
		t.Errorf("unexpanded placeholder in %q", joined)
	}

	// Every key line outside an array has a comment right above it.
	lines := strings.Split(string(raw), "\n")
	key := regexp.MustCompile(`^([a-z_]+) = `)
	for i, l := range lines {
		m := key.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("line %d: key %s has no comment above it", i+1, m[1])
		}
	}
}
