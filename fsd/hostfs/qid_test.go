package hostfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func TestDevicePaths(t *testing.T) {
	var d devices
	d.init(10)
	for _, row := range []struct {
		name     string
		dev, ino uint64
		want     uint64
	}{
		{"root-device-keeps-ino", 10, 1234, 1234},                       // the export's device: inode numbers as they are
		{"root-device-max-ino", 10, inoMask, inoMask},                   // the largest that fits in 56 bits
		{"first-other-device", 20, 1234, 1<<inoBits | 1234},             // same inode, other device: index 1
		{"second-other-device", 30, 1234, 2<<inoBits | 1234},            // and index 2
		{"first-device-again", 20, 99, 1<<inoBits | 99},                 // indices are remembered
		{"huge-ino-overflows", 10, 1 << 60, overflowIndex<<inoBits | 1}, // does not fit: counter space
		{"huge-ino-stable", 10, 1 << 60, overflowIndex<<inoBits | 1},    // and keeps its path
		{"other-huge-ino", 20, 1<<60 + 1, overflowIndex<<inoBits | 2},   // a different one gets another
	} {
		t.Run(row.name, func(t *testing.T) {
			got, err := d.path(row.dev, row.ino)
			if err != nil || got != row.want {
				t.Errorf("path(%d, %#x) = %#x, %v; want %#x", row.dev, row.ino, got, err, row.want)
			}
		})
	}
	// Devices beyond the 254 indices share the overflow space, still
	// unique and stable.
	t.Run("many-devices", func(t *testing.T) {
		var d devices
		d.init(0)
		seen := map[uint64]uint64{}
		for dev := uint64(1); dev <= 400; dev++ {
			p, err := d.path(dev, 7)
			must(t, err)
			if other, dup := seen[p]; dup {
				t.Fatalf("devices %d and %d share path %#x", dev, other, p)
			}
			seen[p] = dev
			if again, _ := d.path(dev, 7); again != p {
				t.Fatalf("device %d: path %#x then %#x", dev, p, again)
			}
		}
	})
	t.Run("overflow-bounded", func(t *testing.T) {
		var d devices
		d.init(0)
		d.overflowMax = 3
		for i := range 3 {
			_, err := d.path(1, 1<<62+uint64(i))
			must(t, err)
		}
		_, err := d.path(1, 1<<62+3)
		wantErr(t, err, linux.EOVERFLOW, "overflow map full")
	})
}

// TestQIDsAcrossDevices mounts two tmpfs instances (each numbers its
// inodes from 1) one inside the other and checks no two files share a QID
// path even where their inode numbers are equal.
func TestQIDsAcrossDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
	base := t.TempDir()
	outer := filepath.Join(base, "outer")
	must(t, os.Mkdir(outer, 0o755))
	if err := unix.Mount("tmpfs", outer, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(outer, unix.MNT_DETACH) })
	inner := filepath.Join(outer, "inner")
	must(t, os.Mkdir(inner, 0o755))
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(inner, unix.MNT_DETACH) })
	for i := range 20 {
		must(t, os.WriteFile(filepath.Join(outer, fmt.Sprintf("o%d", i)), nil, 0o644))
		must(t, os.WriteFile(filepath.Join(inner, fmt.Sprintf("i%d", i)), nil, 0o644))
	}
	// Find a pair with equal inode numbers on the two devices.
	inos := map[uint64]string{}
	for i := range 20 {
		inos[lstatT(t, filepath.Join(outer, fmt.Sprintf("o%d", i))).Ino] = fmt.Sprintf("o%d", i)
	}
	var a, b string
	for i := range 20 {
		name := fmt.Sprintf("i%d", i)
		if o, ok := inos[lstatT(t, filepath.Join(inner, name)).Ino]; ok {
			a, b = o, name
			break
		}
	}
	if a == "" {
		t.Skip("no two files share an inode number on these tmpfs instances")
	}
	_, root := attach(t, outer)
	qa, fa, err := root.Walk([]string{a})
	must(t, err)
	defer fa.Close()
	qb, fb, err := root.Walk([]string{"inner", b})
	must(t, err)
	defer fb.Close()
	ino := lstatT(t, filepath.Join(outer, a)).Ino
	if qa[0].Path != ino || qb[1].Path != 1<<inoBits|ino {
		t.Errorf("%s: %#x, inner/%s: %#x (both ino %d)", a, qa[0].Path, b, qb[1].Path, ino)
	}
	// Readdir QIDs of the inner device use the same mapping.
	d := walkTo(t, root, "inner")
	_, _, err = d.Open(p9.ReadOnly)
	must(t, err)
	ents, err := d.Readdir(0, 8192)
	must(t, err)
	for _, de := range ents {
		if de.Name == b && de.QID.Path != qb[1].Path {
			t.Errorf("readdir qid %#x, walk qid %#x", de.QID.Path, qb[1].Path)
		}
	}
}
