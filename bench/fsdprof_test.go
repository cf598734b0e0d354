package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestFsdProfSmoke builds bench/cmd/fsdprof (fsd/server over fsd/hostfs
// under the profiler) and runs a few workloads against it: the profiling
// path must produce figures and an allocation account.
func TestFsdProfSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped with -short")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	bin := filepath.Join(t.TempDir(), "fsdprof")
	build := exec.Command(goBin, "build", "-o", bin, "./cmd/fsdprof")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fsdprof: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := New(WithParams(smokeParams()), WithScratchDir(t.TempDir()), WithTargets(TFsdProf),
		WithWorkloads(WGetattr, WWalk, WCreate, WReaddir, WRead, WWrite),
		WithFsdProf(bin, t.TempDir())).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ti := res.Targets[TFsdProf]
	if !ti.Available {
		t.Fatalf("fsd-prof did not run: %s", ti.Error)
	}
	for _, w := range res.Workloads {
		if m := w.Results[TFsdProf]; !m.ok() || m.Units <= 0 {
			t.Errorf("%s on fsd-prof: %+v", w.ID, m)
		}
	}
	if ti.Profile == nil || ti.Profile.Mallocs == 0 {
		t.Errorf("no allocation account: %+v (%s)", ti.Profile, ti.Notes)
	}
}
