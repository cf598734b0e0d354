//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestRandom: the file has the size asked for (also when not a multiple
// of 8), two files differ, and an existing file is never overwritten.
func TestRandom(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		size string
		want int64
		code int
	}{
		{"empty", "0", 0, 0},                // nothing to write is fine
		{"one byte", "1", 1, 0},             // shorter than one PCG word
		{"odd size", "1048577", 1048577, 0}, // past a buffer, not a multiple of 8
		{"bad size", "-1", 0, 2},            // a usage error
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := filepath.Join(dir, tc.name+"-a")
			b := filepath.Join(dir, tc.name+"-b")
			if code := randomMain(tc.size, a); code != tc.code {
				t.Fatalf("exit %d, want %d", code, tc.code)
			}
			if tc.code != 0 {
				return
			}
			if code := randomMain(tc.size, b); code != 0 {
				t.Fatalf("second file: exit %d", code)
			}
			da, _ := os.ReadFile(a)
			db, _ := os.ReadFile(b)
			if int64(len(da)) != tc.want {
				t.Errorf("size %d, want %d", len(da), tc.want)
			}
			if tc.want >= 8 && string(da) == string(db) {
				t.Error("two runs wrote the same bytes")
			}
			if code := randomMain(tc.size, a); code != 1 {
				t.Errorf("overwrote an existing file (exit %d)", code)
			}
		})
	}
}

// TestRandomSum: the printed sum is the file's.
func TestRandomSum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	code := randomMain("4097", p)
	os.Stdout = stdout
	w.Close()
	out := make([]byte, 200)
	n, _ := r.Read(out)
	r.Close()
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	data, _ := os.ReadFile(p)
	sum := sha256.Sum256(data)
	if got := string(out[:n]); got != hex.EncodeToString(sum[:])+"\n" {
		t.Errorf("printed %q, file sum %x", got, sum)
	}
}
