package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// Guest ids and modes the swap tests create with: none of them is what a
// host user's inode already has.
const (
	guestUID = 1001
	guestGID = 1002
)

// impostor makes the inode a host user swaps in, of the kind and shape a
// row names, at path; it returns nothing and fails the test on error.
type impostor func(t *testing.T, path string)

func impostorDir(owner int, extra func(t *testing.T, dir string)) impostor {
	return func(t *testing.T, path string) {
		must(t, os.Mkdir(path, 0o700))
		if extra != nil {
			extra(t, path)
		}
		must(t, unix.Chmod(path, 0o700))
		must(t, os.Lchown(path, owner, owner))
	}
}

func impostorFIFO(owner int, link bool) impostor {
	return func(t *testing.T, path string) {
		must(t, unix.Mkfifo(path, 0o600))
		must(t, unix.Chmod(path, 0o600))
		must(t, os.Lchown(path, owner, owner))
		if link {
			must(t, os.Link(path, path+".link"))
		}
	}
}

func impostorSymlink(owner int, target string) impostor {
	return func(t *testing.T, path string) {
		must(t, os.Symlink(target, path))
		must(t, os.Lchown(path, owner, owner))
	}
}

func impostorFile(owner int) impostor {
	return func(t *testing.T, path string) {
		must(t, os.WriteFile(path, []byte("host user's"), 0o600))
		must(t, unix.Chmod(path, 0o600))
		must(t, os.Lchown(path, owner, owner))
	}
}

// TestCreateSwapWindow holds review finding 7. Between the system call
// that makes a new entry and the moment hostfs pins it, a host user who
// can write to the directory can rename another inode of the same type
// onto the name; hostfs must then never give that inode the guest's owner
// and mode. createHook runs in that window: it moves the new entry aside
// (to NAME.ours) and renames an impostor onto NAME. Mkdir, Mknod of a FIFO
// and Symlink check what they pinned and refuse (ESTALE, and a warning);
// Create and Mknod of a regular file never look the name up again (the
// open that made the file pins it), so they succeed on their own inode.
// In every row the impostor keeps its owner, group, mode and links.
func TestCreateSwapWindow(t *testing.T) {
	me := os.Geteuid()
	const stranger = otherID
	for _, row := range []struct {
		name     string
		op       string // mkdir, fifo, symlink, regular, create
		impostor impostor
		root     bool        // needs root (an impostor owned by another uid)
		want     linux.Errno // 0: the create succeeds on its own inode
	}{
		// A host user's empty directory: another owner.
		{"dir-other-owner", "mkdir", impostorDir(stranger, nil), true, linux.ESTALE},
		// The daemon's own directory, but holding a file: not new.
		{"dir-with-entries", "mkdir", impostorDir(me, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o600))
		}), false, linux.ESTALE},
		// The daemon's own directory holding a subdirectory (3 links).
		{"dir-with-subdir", "mkdir", impostorDir(me, func(t *testing.T, dir string) {
			must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
		}), false, linux.ESTALE},
		// A host user's FIFO.
		{"fifo-other-owner", "fifo", impostorFIFO(stranger, false), true, linux.ESTALE},
		// The daemon's own FIFO with a second link: not new.
		{"fifo-with-link", "fifo", impostorFIFO(me, true), false, linux.ESTALE},
		// A host user's symlink (even to the same target).
		{"symlink-other-owner", "symlink", impostorSymlink(stranger, "target"), true, linux.ESTALE},
		// The daemon's own symlink to another target: chown would give
		// the guest a link it did not make.
		{"symlink-other-target", "symlink", impostorSymlink(me, "elsewhere"), true, linux.ESTALE},
		// Mknod of a regular file is pinned by its O_CREAT open: the
		// swap cannot redirect it.
		{"regular-other-owner", "regular", impostorFile(stranger), true, 0},
		// Create (Tlcreate) likewise.
		{"create-other-owner", "create", impostorFile(stranger), true, 0},
	} {
		t.Run(row.name, func(t *testing.T) {
			if row.root && me != 0 {
				t.Skip("needs root: the impostor belongs to another uid")
			}
			forVariants(t, func(t *testing.T, opts []Option) {
				tr := newTree(t)
				logger, logs := logtest.NewNullLogger()
				_, root := attach(t, tr.root, append(opts, WithLogger(logrus.NewEntry(logger)))...)
				name := "new-" + row.name
				path := tr.path(name)
				var before unix.Stat_t
				swapped := false
				createHook = func(dirfd int, got string) {
					if got != name || swapped {
						return
					}
					swapped = true
					must(t, os.Rename(path, path+".ours"))
					row.impostor(t, path+".impostor")
					must(t, os.Rename(path+".impostor", path))
					before = lstatT(t, path)
				}
				t.Cleanup(func() { createHook = nil })

				var err error
				switch row.op {
				case "mkdir":
					_, err = root.Mkdir(name, 0o777, guestUID, guestGID)
				case "fifo":
					_, err = root.Mknod(name, p9.ModeNamedPipe|0o666, 0, 0, guestUID, guestGID)
				case "symlink":
					_, err = root.Symlink("target", name, guestUID, guestGID)
				case "regular":
					_, err = root.Mknod(name, p9.ModeRegular|0o4755, 0, 0, guestUID, guestGID)
				case "create":
					var f p9.File
					f, _, _, err = root.Create(name, p9.ReadWrite, 0o4755, guestUID, guestGID)
					if err == nil {
						f.Close()
					}
				}
				createHook = nil
				if !swapped {
					t.Fatalf("%s never ran the create hook", row.op)
				}
				if row.want != 0 {
					wantErr(t, err, row.want, row.op)
					if !warned(logs, name) {
						t.Errorf("no warning names %s", name)
					}
				} else {
					must(t, err)
				}
				after := lstatT(t, path)
				if after.Ino != before.Ino || after.Uid != before.Uid || after.Gid != before.Gid ||
					after.Mode != before.Mode || after.Nlink != before.Nlink {
					t.Errorf("the impostor changed: %d:%d %#o nlink %d, was %d:%d %#o nlink %d",
						after.Uid, after.Gid, after.Mode, after.Nlink, before.Uid, before.Gid, before.Mode, before.Nlink)
				}
				if row.want == 0 {
					// The create's own inode got the guest's owner and
					// mode wherever it was moved.
					ours := lstatT(t, path+".ours")
					if ours.Uid != guestUID || ours.Gid != guestGID || ours.Mode != unix.S_IFREG|0o4755 {
						t.Errorf("the created file is %d:%d %#o, want %d:%d %#o",
							ours.Uid, ours.Gid, ours.Mode, guestUID, guestGID, unix.S_IFREG|0o4755)
					}
				}
			})
		})
	}
}

// warned reports whether a warning names the entry name.
func warned(logs *logtest.Hook, name string) bool {
	for _, e := range logs.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["name"] == name {
			return true
		}
	}
	return false
}

// TestCreateVerifiesFreshInodes: with nothing swapped in, what Mkdir,
// Mknod and Symlink verify is what a new inode is, on this file system:
// every kind is created, given the guest's mode (and, as root, owner).
func TestCreateVerifiesFreshInodes(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		logger, logs := logtest.NewNullLogger()
		_, root := attach(t, tr.root, append(opts, WithLogger(logrus.NewEntry(logger)))...)
		uid, gid := p9.UID(guestUID), p9.GID(guestGID)
		if os.Geteuid() != 0 {
			uid, gid = p9.NoUID, p9.NoGID
		}
		for _, row := range []struct {
			name string
			mode uint32 // the host mode wanted
			make func() error
		}{
			// An empty directory with 2 links and the daemon's owner.
			{"dir", unix.S_IFDIR | 0o755, func() error {
				_, err := root.Mkdir("dir-new", 0o755, uid, gid)
				return err
			}},
			// A directory the guest makes unreadable to its owner: the
			// check lists it before the mode is set.
			{"dir-mode-0", unix.S_IFDIR, func() error {
				_, err := root.Mkdir("dir-mode-0-new", 0, uid, gid)
				return err
			}},
			// A FIFO: one link, no data.
			{"fifo", unix.S_IFIFO | 0o640, func() error {
				_, err := root.Mknod("fifo-new", p9.ModeNamedPipe|0o640, 0, 0, uid, gid)
				return err
			}},
			// A regular file through Mknod.
			{"regular", unix.S_IFREG | 0o600, func() error {
				_, err := root.Mknod("regular-new", p9.ModeRegular|0o600, 0, 0, uid, gid)
				return err
			}},
			// A symlink whose target is read back.
			{"symlink", unix.S_IFLNK | 0o777, func() error {
				_, err := root.Symlink("some/where", "symlink-new", uid, gid)
				return err
			}},
		} {
			t.Run(row.name, func(t *testing.T) {
				must(t, row.make())
				st := lstatT(t, tr.path(row.name+"-new"))
				if st.Mode != row.mode {
					t.Errorf("host mode %#o, want %#o", st.Mode, row.mode)
				}
				if uid.Ok() && (st.Uid != guestUID || st.Gid != guestGID) {
					t.Errorf("host owner %d:%d, want %d:%d", st.Uid, st.Gid, guestUID, guestGID)
				}
			})
		}
		if n := len(logs.AllEntries()); n != 0 {
			t.Errorf("%d log entries for plain creates: %v", n, logs.LastEntry())
		}
	})
}
