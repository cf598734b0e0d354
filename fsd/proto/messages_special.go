package proto

import (
	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"
)

// Messages whose wire form has an array, a payload or an optional field.

// Twalk walks from fid through Names and attaches the result to NewFID.
type Twalk struct {
	// FID is the starting point.
	FID FID
	// NewFID receives the result; it may equal FID.
	NewFID FID
	// Names are the path elements, at most MaxWalkElements. Decoding reuses
	// the slice's capacity.
	Names []string
}

// Type implements Message.Type.
func (*Twalk) Type() MsgType { return TypeTwalk }

func (m *Twalk) appendBody(b []byte) ([]byte, error) {
	if len(m.Names) > MaxWalkElements {
		return b, errors.WithMessagef(ErrTooManyNames, "%d names", len(m.Names))
	}
	if err := checkStrings(m.Names...); err != nil {
		return b, err
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU32(b, uint32(m.NewFID))
	b = appendU16(b, uint16(len(m.Names)))
	for _, n := range m.Names {
		b = appendStr(b, n)
	}
	return b, nil
}

func (m *Twalk) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = d.fid()
	m.NewFID = d.fid()
	n := d.u16()
	m.Names = m.Names[:0]
	if n > MaxWalkElements {
		d.fail(errors.WithMessagef(ErrTooManyNames, "%d names", n))
	}
	for i := 0; i < int(n) && d.err == nil; i++ {
		m.Names = append(m.Names, d.str())
	}
	return d.done()
}

// Rwalk answers Twalk with one QID per name walked.
type Rwalk struct {
	// QIDs are the files walked to, at most MaxWalkElements.
	QIDs []p9.QID
}

// Type implements Message.Type.
func (*Rwalk) Type() MsgType { return TypeRwalk }

func (m *Rwalk) appendBody(b []byte) ([]byte, error) {
	if len(m.QIDs) > MaxWalkElements {
		return b, errors.WithMessagef(ErrTooManyNames, "%d QIDs", len(m.QIDs))
	}
	b = appendU16(b, uint16(len(m.QIDs)))
	for _, q := range m.QIDs {
		b = appendQID(b, q)
	}
	return b, nil
}

func (m *Rwalk) decodeBody(body []byte) error {
	d := decoder{b: body}
	n := d.u16()
	m.QIDs = m.QIDs[:0]
	if n > MaxWalkElements {
		d.fail(errors.WithMessagef(ErrTooManyNames, "%d QIDs", n))
	}
	for i := 0; i < int(n) && d.err == nil; i++ {
		m.QIDs = append(m.QIDs, d.qid())
	}
	return d.done()
}

// Rread answers Tread.
type Rread struct {
	// Data is what was read. A decoded Data aliases the frame.
	Data []byte
}

// Type implements Message.Type.
func (*Rread) Type() MsgType { return TypeRread }

func (m *Rread) appendBody(b []byte) ([]byte, error) {
	if uint64(len(m.Data)) > 0xFFFFFFFF {
		return b, errors.WithMessagef(ErrPayloadTooLong, "%d bytes", len(m.Data))
	}
	b = appendU32(b, uint32(len(m.Data)))
	return append(b, m.Data...), nil
}

func (m *Rread) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.Data = d.bytes(d.u32())
	return d.done()
}

// Twrite writes to an open file.
type Twrite struct {
	// FID is the open file.
	FID FID
	// Offset is the file offset.
	Offset uint64
	// Data is what to write. A decoded Data aliases the frame: a server can
	// hand it to the file without copying.
	Data []byte
}

// Type implements Message.Type.
func (*Twrite) Type() MsgType { return TypeTwrite }

func (m *Twrite) appendBody(b []byte) ([]byte, error) {
	if uint64(len(m.Data)) > 0xFFFFFFFF {
		return b, errors.WithMessagef(ErrPayloadTooLong, "%d bytes", len(m.Data))
	}
	b = appendU32(b, uint32(m.FID))
	b = appendU64(b, m.Offset)
	b = appendU32(b, uint32(len(m.Data)))
	return append(b, m.Data...), nil
}

func (m *Twrite) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = d.fid()
	m.Offset = d.u64()
	m.Data = d.bytes(d.u32())
	return d.done()
}

// Rreaddir answers Treaddir with directory entries.
type Rreaddir struct {
	// Entries are the entries, each DirentSize(name) bytes on the wire.
	// Encoding writes all of them: a server bounds them by the request's
	// count (see AppendDirent for building a reply in place).
	Entries []p9.Dirent
}

// Type implements Message.Type.
func (*Rreaddir) Type() MsgType { return TypeRreaddir }

func (m *Rreaddir) appendBody(b []byte) ([]byte, error) {
	countAt := len(b)
	b = appendU32(b, 0)
	for i := range m.Entries {
		var err error
		if b, err = AppendDirent(b, &m.Entries[i]); err != nil {
			return b[:countAt], err
		}
	}
	n := len(b) - countAt - 4
	if uint64(n) > 0xFFFFFFFF {
		return b[:countAt], errors.WithMessagef(ErrPayloadTooLong, "%d bytes of entries", n)
	}
	le.PutUint32(b[countAt:], uint32(n))
	return b, nil
}

func (m *Rreaddir) decodeBody(body []byte) error {
	d := decoder{b: body}
	payload := d.bytes(d.u32())
	if err := d.done(); err != nil {
		return err
	}
	m.Entries = m.Entries[:0]
	e := decoder{b: payload}
	for len(e.b) > 0 && e.err == nil {
		de := e.dirent()
		if e.err == nil {
			m.Entries = append(m.Entries, de)
		}
	}
	return e.done()
}

// Tfsync flushes a file to stable storage.
type Tfsync struct {
	// FID is the open file.
	FID FID
	// Datasync, when non-zero, asks for fdatasync semantics. The Linux
	// client sends it; p9's client omits the field, which decodes as 0.
	Datasync uint32
}

// Type implements Message.Type.
func (*Tfsync) Type() MsgType { return TypeTfsync }

func (m *Tfsync) appendBody(b []byte) ([]byte, error) {
	b = appendU32(b, uint32(m.FID))
	return appendU32(b, m.Datasync), nil
}

func (m *Tfsync) decodeBody(body []byte) error {
	d := decoder{b: body}
	m.FID = d.fid()
	m.Datasync = 0
	if len(d.b) > 0 {
		m.Datasync = d.u32()
	}
	return d.done()
}
