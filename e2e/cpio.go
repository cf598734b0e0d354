//go:build linux

package e2e

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pkg/errors"
)

// cpioWriter writes a "newc" cpio archive, the format the kernel unpacks
// as an initramfs. Names are relative ("bin/busybox"); the archive holds
// exactly what is added, with root ownership and mtime 0, so the same
// input gives the same bytes.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

// File-type bits of a cpio mode (as in stat(2)).
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, nlink uint32, size int, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		c.err = errors.New("cpio: empty name")
		return
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad(len(hdr) + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	_, c.err = c.w.Write(b)
}

// pad writes the zero bytes that align n bytes to 4.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm os.FileMode) {
	c.header(name, cpioDir|uint32(perm.Perm()), 2, 0, 0, 0)
}

// File adds a regular file with the given content.
func (c *cpioWriter) File(name string, perm os.FileMode, data []byte) {
	c.header(name, cpioFile|uint32(perm.Perm()), 1, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// Symlink adds a symbolic link.
func (c *cpioWriter) Symlink(name, target string) {
	c.header(name, cpioSymlink|0o777, 1, len(target), 0, 0)
	c.write([]byte(target))
	c.pad(len(target))
}

// CharDev adds a character device node (the kernel needs /dev/console
// before init can have a console).
func (c *cpioWriter) CharDev(name string, perm os.FileMode, major, minor uint32) {
	c.header(name, cpioCharDev|uint32(perm.Perm()), 1, 0, major, minor)
}

// Close writes the trailer and returns the first error met.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 1, 0, 0, 0)
	return errors.Wrap(c.err, "write cpio archive")
}
