package fsd

import (
	"context"
	"testing"
	"time"

	"github.com/fsd-launcher/fsd-launcher/fsd/conformance"
)

// fsdTarget serves the conformance suite's trees with Serve in this
// process: fsd's own server over hostfs, routed by aname, with no known
// failures.
func fsdTarget(t *testing.T, root string, mounts []conformance.Mount) string {
	t.Helper()
	exports := []Export{{Source: root}}
	for _, m := range mounts {
		exports = append(exports, Export{Tag: m.Tag, Source: m.Source, ReadOnly: m.ReadOnly})
	}
	l := listenUnix(t)
	ready := make(lines, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Listener: l, Exports: exports, Sandbox: "none", Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(timeout):
		t.Fatal("no readiness line")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// TestConformance runs the acceptance suite against the daemon: fsd's
// server over hostfs, every case expected to pass.
func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Target{Start: fsdTarget})
}
