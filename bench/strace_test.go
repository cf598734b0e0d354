package bench

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseStraceSummary(t *testing.T) {
	const withErrors = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           2       200           read
 30.00    0.000300           1       300        12 openat2
 30.00    0.000300           3       100           write
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           1       600        12 total
`
	tests := []struct {
		name    string
		in      string
		want    map[string]int64
		wantErr bool
	}{
		// Rows with and without an errors column are both counted.
		{"summary", withErrors, map[string]int64{"read": 200, "openat2": 300, "write": 100, "total": 600}, false},
		// strace that detached before writing a summary is an error, not zeros.
		{"no summary", "strace: Process 12 attached\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "strace.txt")
			if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := parseStraceSummary(path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s: %d, want %d", k, got[k], v)
				}
			}
		})
	}
}
