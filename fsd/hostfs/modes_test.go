package hostfs

import (
	"os"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// TestNoSetuid: under NoSetuid no mode the guest gives keeps setuid, nor
// setgid on anything but a directory (review finding 8), whatever the
// operation; without it the same requests keep every bit.
func TestNoSetuid(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	for _, row := range []struct {
		name     string
		op       string // create, mkdir, mknod, fifo, setattr-file, setattr-dir
		mode     uint32
		noSetuid bool
		want     uint32 // host permission bits
	}{
		{"create-setuid", "create", 0o4755, true, 0o755},           // setuid stripped
		{"create-setgid", "create", 0o2755, true, 0o755},           // setgid stripped on a file
		{"create-both", "create", 0o6711, true, 0o711},             // both at once
		{"create-sticky", "create", 0o1644, true, 0o1644},          // sticky is not a privilege: kept
		{"mkdir-setuid", "mkdir", 0o4755, true, 0o755},             // meaningless on a directory: stripped
		{"mkdir-setgid", "mkdir", 0o2775, true, 0o2775},            // group inheritance: kept
		{"mknod-regular", "mknod", 0o6644, true, 0o644},            // Tmknod of a regular file
		{"mknod-fifo", "fifo", 0o2666, true, 0o666},                // Tmknod of a FIFO
		{"setattr-file", "setattr-file", 0o4755, true, 0o755},      // Tsetattr of a file
		{"setattr-dir", "setattr-dir", 0o6755, true, 0o2755},       // Tsetattr of a directory
		{"default-create", "create", 0o6755, false, 0o6755},        // without the option: kept exactly
		{"default-setattr", "setattr-file", 0o4755, false, 0o4755}, // likewise
	} {
		t.Run(row.name, func(t *testing.T) {
			tr := newTree(t)
			var opts []Option
			if row.noSetuid {
				opts = append(opts, NoSetuid())
			}
			_, root := attach(t, tr.root, opts...)
			name := "n"
			var err error
			switch row.op {
			case "create":
				var f p9.File
				f, _, _, err = root.Create(name, p9.ReadWrite, p9.FileMode(row.mode), p9.NoUID, p9.NoGID)
				if err == nil {
					f.Close()
				}
			case "mkdir":
				_, err = root.Mkdir(name, p9.FileMode(row.mode), p9.NoUID, p9.NoGID)
			case "mknod":
				_, err = root.Mknod(name, p9.ModeRegular|p9.FileMode(row.mode), 0, 0, p9.NoUID, p9.NoGID)
			case "fifo":
				_, err = root.Mknod(name, p9.ModeNamedPipe|p9.FileMode(row.mode), 0, 0, p9.NoUID, p9.NoGID)
			case "setattr-file":
				name = "file.txt"
				err = walkTo(t, root, name).SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: p9.FileMode(row.mode)})
			case "setattr-dir":
				name = "dir"
				err = walkTo(t, root, name).SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: p9.FileMode(row.mode)})
			}
			must(t, err)
			if got := lstatT(t, tr.path(name)).Mode & permBits; got != row.want {
				t.Errorf("host mode %#o, want %#o", got, row.want)
			}
		})
	}
	// As root the guest's owner is given too, and the mode is still
	// stripped after the chown.
	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		tr := newTree(t)
		_, root := attach(t, tr.root, NoSetuid())
		f, _, _, err := root.Create("owned", p9.ReadWrite, 0o4755, 0, 0)
		must(t, err)
		f.Close()
		must(t, walkTo(t, root, "file.txt").SetAttr(p9.SetAttrMask{Permissions: true, UID: true, GID: true},
			p9.SetAttr{Permissions: 0o6755, UID: 0, GID: 0}))
		for _, name := range []string{"owned", "file.txt"} {
			if st := lstatT(t, tr.path(name)); st.Uid != 0 || st.Mode&permBits != 0o755 {
				t.Errorf("%s: %d %#o, want root-owned 0755", name, st.Uid, st.Mode&permBits)
			}
		}
	})
}

// TestSetAttrDeviceNodes: the guest can never change the mode or owner of
// a host device node in the export (review finding 8: a chmod 0666 would
// let host users open it); times, and other special files, still change.
func TestSetAttrDeviceNodes(t *testing.T) {
	tr := newTree(t)
	if err := unix.Mknod(tr.path("null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node (needs CAP_MKNOD): %v", err)
	}
	if err := unix.Mknod(tr.path("blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Skipf("cannot make a device node (needs CAP_MKNOD): %v", err)
	}
	must(t, unix.Mkfifo(tr.path("fifo"), 0o600))
	_, root := attach(t, tr.root)
	for _, row := range []struct {
		name  string
		file  string
		valid p9.SetAttrMask
		attr  p9.SetAttr
		want  linux.Errno // 0: the change is made
	}{
		{"chr-chmod", "null", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o666}, linux.EPERM},    // world-openable device
		{"chr-chown", "null", p9.SetAttrMask{UID: true}, p9.SetAttr{UID: 1001}, linux.EPERM},                     // handing it to a host user
		{"chr-chgrp", "null", p9.SetAttrMask{GID: true}, p9.SetAttr{GID: 1001}, linux.EPERM},                     // or to a group
		{"blk-chmod", "blk", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o666}, linux.EPERM},     // block devices alike
		{"chr-mode-and-time", "null", p9.SetAttrMask{Permissions: true, MTime: true}, p9.SetAttr{}, linux.EPERM}, // refused whole, nothing changed
		{"chr-times", "null", p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{}, 0},                         // times are harmless
		{"fifo-chmod", "fifo", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o640}, 0},             // not a device
	} {
		t.Run(row.name, func(t *testing.T) {
			before := lstatT(t, tr.path(row.file))
			err := walkTo(t, root, row.file).SetAttr(row.valid, row.attr)
			after := lstatT(t, tr.path(row.file))
			if row.want == 0 {
				must(t, err)
				if row.valid.Permissions && after.Mode&permBits != uint32(row.attr.Permissions) {
					t.Errorf("mode %#o, want %#o", after.Mode&permBits, row.attr.Permissions)
				}
				return
			}
			wantErr(t, err, row.want, "setattr")
			if after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid || after.Mtim != before.Mtim {
				t.Errorf("device node changed: %d:%d %#o, was %d:%d %#o", after.Uid, after.Gid, after.Mode, before.Uid, before.Gid, before.Mode)
			}
		})
	}
}
