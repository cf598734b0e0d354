package hostfs

import (
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// heldAhead reports the chunk d holds read ahead: where it starts and how
// many entries it has.
func heldAhead(d *file) (at uint64, n int, ok bool) {
	dr := d.open.Load().dir
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if dr.ahead == nil {
		return 0, 0, false
	}
	return dr.aheadAt, len(dr.ahead.ents), true
}

// waitAhead waits until d holds a chunk read ahead (the read-ahead runs in
// the background).
func waitAhead(t *testing.T, d *file) (uint64, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if at, n, ok := heldAhead(d); ok {
			return at, n
		}
		if time.Now().After(deadline) {
			t.Fatal("no chunk was read ahead within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitSlots waits until no read-ahead slot is in use.
func waitSlots(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(readAheadSlots) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d read-ahead slots still in use", len(readAheadSlots))
		}
		time.Sleep(time.Millisecond)
	}
}

func direntBytes(ents []p9.Dirent) int {
	n := 0
	for _, de := range ents {
		n += direntHeader + len(de.Name)
	}
	return n
}

// TestReaddirReadAhead: a large directory is answered in chunks of at most
// ReaddirChunk bytes whatever the budget asked, and after a full chunk the
// next one is read in the background. A call that continues gets exactly
// the chunk read ahead; a call that rewinds, or asks less, gets what it
// would have got without read-ahead; closing the directory releases the
// chunk, its slot and the fd; and no more than maxReadAhead chunks are held
// across the process however many directories are partly read.
func TestReaddirReadAhead(t *testing.T) {
	tr := newTree(t)
	const n = 5000 // about 250 KB of entries: four chunks
	want := bigDir(t, tr.path("big"), n)
	_, root := attach(t, tr.root)
	const budget = 1 << 20 // what Linux asks at msize 1 MiB

	t.Run("continue", func(t *testing.T) {
		d := openDirFile(t, root, "big")
		first, err := d.Readdir(0, budget)
		must(t, err)
		if b := direntBytes(first); b > ReaddirChunk || b < ReaddirChunk-512 {
			t.Fatalf("first call: %d bytes of entries, want a full chunk of at most %d", b, ReaddirChunk)
		}
		at, held := waitAhead(t, d)
		if last := first[len(first)-1].Offset; at != last {
			t.Fatalf("chunk read ahead from offset %d, want %d (where the first call ended)", at, last)
		}
		// The chunk read ahead is exactly what a fresh directory
		// returns from the same offset.
		second, err := d.Readdir(at, budget)
		must(t, err)
		if len(second) != held {
			t.Fatalf("second call: %d entries, want the %d read ahead", len(second), held)
		}
		fd := openDirFile(t, root, "big")
		fresh, err := fd.Readdir(at, budget)
		must(t, err)
		must(t, fd.Close())
		if len(fresh) != len(second) {
			t.Fatalf("fresh directory: %d entries, read ahead: %d", len(fresh), len(second))
		}
		for i := range fresh {
			if fresh[i] != second[i] {
				t.Fatalf("entry %d: read ahead %v, fresh %v", i, second[i], fresh[i])
			}
		}
		rest := readAllDir(t, d, second[len(second)-1].Offset, budget)
		exactlyOnce(t, append(append(first, second...), rest...), want)
		must(t, d.Close())
		waitSlots(t)
	})

	t.Run("rewind", func(t *testing.T) {
		d := openDirFile(t, root, "big")
		defer d.Close()
		first, err := d.Readdir(0, budget)
		must(t, err)
		waitAhead(t, d)
		again, err := d.Readdir(0, budget)
		must(t, err)
		if len(again) != len(first) || again[0] != first[0] || again[len(again)-1] != first[len(first)-1] {
			t.Fatalf("rewind: %d entries (%v..%v), want the first chunk again (%d, %v..%v)",
				len(again), again[0], again[len(again)-1], len(first), first[0], first[len(first)-1])
		}
		exactlyOnce(t, append(again, readAllDir(t, d, again[len(again)-1].Offset, budget)...), want)
	})

	t.Run("smaller-budget", func(t *testing.T) {
		d := openDirFile(t, root, "big")
		defer d.Close()
		first, err := d.Readdir(0, budget)
		must(t, err)
		at, _ := waitAhead(t, d)
		// 100 bytes hold one or two entries: the chunk read ahead
		// (64 KiB of them) is dropped and the directory seeks back.
		few, err := d.Readdir(at, 100)
		must(t, err)
		if len(few) == 0 || direntBytes(few) > 100 {
			t.Fatalf("readdir(%d, 100): %d entries, %d bytes", at, len(few), direntBytes(few))
		}
		rest := readAllDir(t, d, few[len(few)-1].Offset, budget)
		exactlyOnce(t, append(append(first, few...), rest...), want)
	})

	t.Run("close-releases", func(t *testing.T) {
		waitSlots(t)
		fds := countFDs(t)
		for range 20 {
			d := openDirFile(t, root, "big")
			if _, err := d.Readdir(0, budget); err != nil {
				t.Fatal(err)
			}
			// Closed while the read-ahead may still run.
			must(t, d.Close())
		}
		waitSlots(t)
		if got := countFDs(t); got != fds {
			t.Errorf("%d fds open after closing every directory, want %d", got, fds)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		waitSlots(t)
		dirs := make([]*file, 3*maxReadAhead)
		for i := range dirs {
			dirs[i] = openDirFile(t, root, "big")
			if _, err := dirs[i].Readdir(0, budget); err != nil {
				t.Fatal(err)
			}
		}
		// Let every read-ahead that got a slot finish.
		deadline := time.Now().Add(10 * time.Second)
		for {
			held := 0
			for _, d := range dirs {
				if _, _, ok := heldAhead(d); ok {
					held++
				}
			}
			if held > maxReadAhead || len(readAheadSlots) > maxReadAhead {
				t.Fatalf("%d chunks held, %d slots in use: want at most %d", held, len(readAheadSlots), maxReadAhead)
			}
			if held == len(readAheadSlots) && held > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d chunks held, %d slots in use", held, len(readAheadSlots))
			}
			time.Sleep(time.Millisecond)
		}
		// Every directory, with or without a chunk read ahead, reads
		// on to exactly the rest.
		for _, d := range dirs {
			all := readAllDir(t, d, 0, budget)
			exactlyOnce(t, all, want)
			must(t, d.Close())
		}
		waitSlots(t)
	})
}
