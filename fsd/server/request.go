package server

import (
	"sync"

	"github.com/hugelgupf/p9/linux"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// request is one request in flight. Requests are pooled: the decoded T
// message and the R message of the reply live inside it, so a request costs
// no allocation in the steady state.
type request struct {
	c   *conn
	tag proto.Tag
	typ proto.MsgType
	// frame is the request frame, kept only for Twrite, whose payload the
	// File reads from it.
	frame *[]byte
	// out holds the reply frame.
	out *[]byte
	// pipe, when set, holds pipeN bytes of a spliced Rread's data, which
	// finish sends after the header in out.
	pipe  *pipe
	pipeN int
	// waiters are the Tflush requests to answer after this one's reply.
	waiters []*request
	t       tmsgs
	r       rmsgs
}

// tmsgs holds one decoded request of each type.
type tmsgs struct {
	auth        proto.Tauth
	attach      proto.Tattach
	flush       proto.Tflush
	walk        proto.Twalk
	read        proto.Tread
	write       proto.Twrite
	clunk       proto.Tclunk
	remove      proto.Tremove
	statfs      proto.Tstatfs
	lopen       proto.Tlopen
	lcreate     proto.Tlcreate
	symlink     proto.Tsymlink
	mknod       proto.Tmknod
	rename      proto.Trename
	readlink    proto.Treadlink
	getattr     proto.Tgetattr
	setattr     proto.Tsetattr
	xattrwalk   proto.Txattrwalk
	xattrcreate proto.Txattrcreate
	readdir     proto.Treaddir
	fsync       proto.Tfsync
	lock        proto.Tlock
	getlock     proto.Tgetlock
	link        proto.Tlink
	mkdir       proto.Tmkdir
	renameat    proto.Trenameat
	unlinkat    proto.Tunlinkat
}

// get returns the slot for a request of type t, or nil when t is not a
// request the server handles (Tversion is handled by the reader).
func (m *tmsgs) get(t proto.MsgType) proto.Message {
	switch t {
	case proto.TypeTauth:
		return &m.auth
	case proto.TypeTattach:
		return &m.attach
	case proto.TypeTflush:
		return &m.flush
	case proto.TypeTwalk:
		return &m.walk
	case proto.TypeTread:
		return &m.read
	case proto.TypeTwrite:
		return &m.write
	case proto.TypeTclunk:
		return &m.clunk
	case proto.TypeTremove:
		return &m.remove
	case proto.TypeTstatfs:
		return &m.statfs
	case proto.TypeTlopen:
		return &m.lopen
	case proto.TypeTlcreate:
		return &m.lcreate
	case proto.TypeTsymlink:
		return &m.symlink
	case proto.TypeTmknod:
		return &m.mknod
	case proto.TypeTrename:
		return &m.rename
	case proto.TypeTreadlink:
		return &m.readlink
	case proto.TypeTgetattr:
		return &m.getattr
	case proto.TypeTsetattr:
		return &m.setattr
	case proto.TypeTxattrwalk:
		return &m.xattrwalk
	case proto.TypeTxattrcreate:
		return &m.xattrcreate
	case proto.TypeTreaddir:
		return &m.readdir
	case proto.TypeTfsync:
		return &m.fsync
	case proto.TypeTlock:
		return &m.lock
	case proto.TypeTgetlock:
		return &m.getlock
	case proto.TypeTlink:
		return &m.link
	case proto.TypeTmkdir:
		return &m.mkdir
	case proto.TypeTrenameat:
		return &m.renameat
	case proto.TypeTunlinkat:
		return &m.unlinkat
	}
	return nil
}

// rmsgs holds the replies that carry fields.
type rmsgs struct {
	attach    proto.Rattach
	walk      proto.Rwalk
	lopen     proto.Rlopen
	lcreate   proto.Rlcreate
	symlink   proto.Rsymlink
	mknod     proto.Rmknod
	mkdir     proto.Rmkdir
	readlink  proto.Rreadlink
	getattr   proto.Rgetattr
	statfs    proto.Rstatfs
	xattrwalk proto.Rxattrwalk
	write     proto.Rwrite
	lock      proto.Rlock
	getlock   proto.Rgetlock
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

func getRequest(c *conn, tag proto.Tag, typ proto.MsgType) *request {
	r := requestPool.Get().(*request)
	r.c, r.tag, r.typ = c, tag, typ
	return r
}

// putRequest returns r's buffers and r itself to their pools. Fields that
// could pin memory (payloads, File results) are cleared.
func putRequest(r *request) {
	putBuf(r.frame)
	putBuf(r.out)
	r.frame, r.out, r.c = nil, nil, nil
	clear(r.waiters)
	r.waiters = r.waiters[:0]
	r.t.write.Data = nil
	r.r.walk.QIDs = nil
	requestPool.Put(r)
}

// outBuf returns the reply buffer with length n.
func (r *request) outBuf(n int) []byte {
	if r.out != nil && cap(*r.out) < n {
		putBuf(r.out)
		r.out = nil
	}
	if r.out == nil {
		r.out = getBuf(n)
	}
	*r.out = (*r.out)[:n]
	return *r.out
}

// encode builds the reply frame for m.
func (r *request) encode(m proto.Message) []byte {
	b := r.outBuf(512)[:0]
	out, err := proto.Append(b, r.tag, m)
	if err != nil {
		r.c.log.WithError(err).Errorf("cannot encode the reply to %v", r.typ)
		return r.errorReply(linux.EIO)
	}
	*r.out = out
	return out
}

// errorReply builds an Rlerror frame.
func (r *request) errorReply(e linux.Errno) []byte {
	b := r.outBuf(proto.HeaderSize + 4)
	proto.PutHeader(b, proto.HeaderSize+4, proto.TypeRlerror, r.tag)
	le32(b[proto.HeaderSize:], uint32(e))
	return b
}

// emptyReply builds a reply with no body (Rclunk, Rflush, ...).
func (r *request) emptyReply(t proto.MsgType) []byte {
	b := r.outBuf(proto.HeaderSize)
	proto.PutHeader(b, proto.HeaderSize, t, r.tag)
	return b
}
