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
//
// The node of a File that pinned a new inode (a walk or a create) lives
// inside that File's allocation (pinnedFile.own); the export root's node
// and the intermediate directories of a multi-name walk are allocated on
// their own. Sharing a node only ever extends the life of the memory that
// holds it, never of its fd, which follows refs alone.
type node struct {
	fd   int
	dev  uint64
	ino  uint64
	mode uint32 // S_IFMT bits
	refs atomic.Int32
	qid  p9.QID
}

// init makes n the node of fd (which the node now owns) with one
// reference. n must be new: init is not safe once n is shared.
func (n *node) init(fd int, st *unix.Stat_t, qid p9.QID) {
	n.fd, n.dev, n.ino, n.mode, n.qid = fd, st.Dev, st.Ino, st.Mode&unix.S_IFMT, qid
	n.refs.Store(1)
}

// newNode wraps fd (which the node now owns) in a node of its own, with
// one reference.
func newNode(fd int, st *unix.Stat_t, qid p9.QID) *node {
	n := new(node)
	n.init(fd, st, qid)
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
func (n *node) isDevice() bool  { return n.mode == unix.S_IFCHR || n.mode == unix.S_IFBLK }

// sameInode reports whether st describes n's inode.
func (n *node) sameInode(st *unix.Stat_t) bool {
	return st.Dev == n.dev && st.Ino == n.ino
}
