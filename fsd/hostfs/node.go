package hostfs

import (
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// node is one pinned host fd and what never changes about its inode:
// device, inode number, file type and QID. Files share nodes (a clone
// shares its source's node; a child holds its parent's node for Remove),
// so a node is reference counted and its fd is closed exactly once, when
// the last reference goes.
type node struct {
	fd   int
	dev  uint64
	ino  uint64
	mode uint32 // S_IFMT bits
	qid  p9.QID

	refs atomic.Int32
}

// newNode wraps fd (which the node now owns) with one reference.
func newNode(fd int, st *unix.Stat_t, qid p9.QID) *node {
	n := &node{fd: fd, dev: st.Dev, ino: st.Ino, mode: st.Mode & unix.S_IFMT, qid: qid}
	n.refs.Store(1)
	return n
}

func (n *node) incRef() { n.refs.Add(1) }

func (n *node) decRef() {
	if n.refs.Add(-1) == 0 {
		unix.Close(n.fd)
	}
}

func (n *node) isDir() bool     { return n.mode == unix.S_IFDIR }
func (n *node) isRegular() bool { return n.mode == unix.S_IFREG }
func (n *node) isSymlink() bool { return n.mode == unix.S_IFLNK }

// sameInode reports whether st describes n's inode.
func (n *node) sameInode(st *unix.Stat_t) bool {
	return st.Dev == n.dev && st.Ino == n.ino
}
