package launcher

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// State is the content of the state file `<socket>.state` that Start writes
// once the daemon is ready. It lets a later process (`fsd-launcher stop`,
// `status`) prove that a PID is still the daemon it started: a PID alone can
// be reused, a PID with its start time cannot.
type State struct {
	// PID is the daemon's process ID (the process the launcher started).
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat (clock ticks after boot).
	StartTime uint64 `json:"start_time"`
	// Socket is the socket path the daemon serves.
	Socket string `json:"socket"`
	// SocketInode is the sockfs inode of the listening socket (the number in
	// the daemon's /proc/PID/fd/N -> "socket:[N]").
	SocketInode uint64 `json:"socket_inode"`
	// Daemon is the daemon binary; Builtin is true for `fsd-launcher serve`.
	Daemon  string `json:"daemon"`
	Builtin bool   `json:"builtin"`
	// LauncherVersion is the version of the launcher that wrote the file.
	LauncherVersion string `json:"launcher_version"`
	// StartedAt is when the daemon was started.
	StartedAt time.Time `json:"started_at"`
}

// maxStateSize bounds what ReadState reads: a state file is a few hundred
// bytes, anything larger is not ours.
const maxStateSize = 64 << 10

// StatePath returns the state file path for a socket path: socketPath +
// ".state".
func StatePath(socketPath string) string { return socketPath + ".state" }

// ReadState reads and decodes the state file of socketPath. It never
// follows a symlink, and refuses a file owned by another user or writable
// by group or others (Start writes it 0600). A missing file is an error satisfying
// errors.Is(err, os.ErrNotExist).
func ReadState(socketPath string) (*State, error) {
	p := StatePath(socketPath)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "open state file")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, errors.Wrapf(err, "stat state file %s", p)
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.Errorf("state file %s is not a regular file (%s)", p, fi.Mode().Type())
	}
	// stop trusts the file to name the daemon it may signal: only a file
	// this user wrote, and no one else may change, is believed.
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, errors.Errorf("state file %s is owned by uid %d, not by this user (%d)", p, sys.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, errors.Errorf("state file %s is writable by group or others (mode %#o)", p, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, errors.Wrapf(err, "read state file %s", p)
	}
	if len(b) > maxStateSize {
		return nil, errors.Errorf("state file %s is larger than %d bytes", p, maxStateSize)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, errors.Wrapf(err, "decode state file %s", p)
	}
	if s.PID <= 0 {
		return nil, errors.Errorf("state file %s: invalid pid %d", p, s.PID)
	}
	return &s, nil
}

// writeState writes the state file atomically: a temporary file (0600) in
// the same directory, fsync, rename over the final name.
func writeState(s *State) (err error) {
	p := StatePath(s.Socket)
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode state")
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp*")
	if err != nil {
		return errors.Wrapf(err, "create state file for %s", p)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return errors.Wrapf(err, "chmod %s", tmp.Name())
	}
	if _, err := tmp.Write(b); err != nil {
		return errors.Wrapf(err, "write %s", tmp.Name())
	}
	if err := tmp.Sync(); err != nil {
		return errors.Wrapf(err, "fsync %s", tmp.Name())
	}
	if err := tmp.Close(); err != nil {
		return errors.Wrapf(err, "close %s", tmp.Name())
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return errors.Wrapf(err, "rename %s to %s", tmp.Name(), p)
	}
	return nil
}

// removeStateIf removes the state file of socketPath when it names pid (a
// state file of another daemon is left alone). A missing file is fine.
func removeStateIf(socketPath string, pid int) error {
	s, err := ReadState(socketPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if s.PID != pid {
		return nil
	}
	if err := os.Remove(StatePath(socketPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Wrapf(err, "remove state file %s", StatePath(socketPath))
	}
	return nil
}

// fileID is a file's identity on its file system.
type fileID struct{ Dev, Ino uint64 }

// lstatID returns the identity of the file at p without following a
// symlink.
func lstatID(p string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fileID{}, errors.Wrapf(err, "lstat %s", p)
	}
	return fileID{Dev: st.Dev, Ino: st.Ino}, nil
}
