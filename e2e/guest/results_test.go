//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newTestResults writes result lines to a plain file instead of a serial
// port.
func newTestResults(t *testing.T) (*results, *bytes.Buffer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "port")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	r := &results{console: &console}
	if err := r.open(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.port.Close() })
	return r, &console, path
}

func TestResultsTiming(t *testing.T) {
	r, console, path := newTestResults(t)
	t0 := time.Unix(1000, 0)
	r.line("BEGIN copy", t0)
	r.line("some chatter", t0.Add(time.Millisecond))
	r.line("SUM guest/x "+strings.Repeat("a", 64), t0.Add(2*time.Millisecond))
	r.line("STEP copy OK 4 files", t0.Add(1500*time.Millisecond))
	r.finish("", 3*time.Second, 2*time.Second)

	port, _ := os.ReadFile(path)
	want := "SUM guest/x " + strings.Repeat("a", 64) + "\n" +
		"STEP copy OK ns=1500000000 4 files\n" +
		"E2E DONE steps=1 failed=0 ns=3000000000 boot_ns=2000000000\n"
	if string(port) != want {
		t.Errorf("results port:\n%s\nwant:\n%s", port, want)
	}
	// The console sees everything, the port only result lines.
	if !strings.Contains(console.String(), "some chatter") || strings.Contains(string(port), "chatter") {
		t.Errorf("console %q / port %q", console.String(), port)
	}
}

func TestResultsFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lines  []string
		reason string
		want   string // substring of the final line
	}{
		// All steps OK or SKIP: done.
		{"ok and skip", []string{"BEGIN a", "STEP a OK", "BEGIN b", "STEP b SKIP n/a"}, "", "E2E DONE steps=2 failed=0"},
		// One failed step fails the run.
		{"failed step", []string{"BEGIN a", "STEP a FAIL broke"}, "", "E2E FAILED steps=1 failed=1"},
		// A status that is not OK/SKIP counts as a failure.
		{"garbled status", []string{"BEGIN a", "STEP a MAYBE"}, "", "failed=1"},
		// A step that began and never ended (script died mid-step).
		{"open step", []string{"BEGIN a"}, "", `step "a" never ended`},
		// A STEP without BEGIN is a protocol error.
		{"no begin", []string{"STEP a OK"}, "", `step "a" ended without BEGIN`},
		// No steps at all is not success.
		{"no steps", nil, "", "E2E FAILED steps=0"},
		// A failure outside the script (unmount, exit status) fails the run.
		{"reason", []string{"BEGIN a", "STEP a OK"}, "script exited 1", "E2E FAILED steps=1 failed=0 ns=0 boot_ns=0 script exited 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, path := newTestResults(t)
			for _, l := range tc.lines {
				r.line(l, time.Now())
			}
			r.finish(tc.reason, 0, 0)
			port, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(port)), "\n")
			final := lines[len(lines)-1]
			if !strings.Contains(final, tc.want) {
				t.Errorf("final line %q lacks %q", final, tc.want)
			}
		})
	}
}

// TestResultsScanLongLine: a line longer than the scanner's limit ends the
// scan with a recorded problem instead of hanging the script.
func TestResultsScanLongLine(t *testing.T) {
	r, _, path := newTestResults(t)
	in := "BEGIN a\nSTEP a OK\n" + strings.Repeat("x", 2<<20) + "\nBEGIN b\n"
	r.scan(strings.NewReader(in))
	r.finish("", 0, 0)
	port, _ := os.ReadFile(path)
	if !strings.Contains(string(port), "E2E FAILED") || !strings.Contains(string(port), "reading script output") {
		t.Errorf("port: %s", port)
	}
}
