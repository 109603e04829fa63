package formstream

import (
	"io"
	"math"
	"mime"
	"net/textproto"
)

// A Part is one part of a multipart body. Its data is read with Read,
// WriteTo or Chunk, which may be mixed; it ends where the next delimiter
// begins. A Part is read through its Reader and is valid until the next
// call to NextPart.
type Part struct {
	// Header is the part's header, with canonical keys like
	// mime/multipart's.
	Header textproto.MIMEHeader

	mr *Reader

	dispParsed bool
	disp       string
	dispParams map[string]string
}

// next returns the next run of the part's data, at most max bytes of it.
// If greedy, it reads on while reads fill the room they are given, until
// the buffer is full, the part ends, or input ends, to return long runs;
// it never waits for the network while it has data to return. A full
// buffer is moved into a bigger one when the pool's budget allows, and
// handed out otherwise.
func (p *Part) next(greedy bool, max int) ([]byte, error) {
	rd := p.mr
	if rd.cur != p {
		return nil, io.EOF // an earlier part, over
	}
	if rd.err != nil {
		return nil, rd.err // failed while p was being read
	}
	for {
		rd.scan()
		if rd.pend > 0 && (!greedy || rd.delim || rd.srcErr != nil || !rd.filled || (rd.w == len(rd.buf) && !rd.grow(false))) {
			n := min(rd.pend, max)
			c := rd.buf[rd.r : rd.r+n : rd.r+n]
			rd.r += n
			rd.pend -= n
			return c, nil
		}
		if rd.delim {
			return nil, io.EOF
		}
		if !rd.more() && rd.pend == 0 {
			return nil, rd.fail(rd.inputErr("part data"))
		}
	}
}

// Chunk returns the next run of the part's data as a slice of the
// Reader's buffer, valid only until the next call to any method of the
// Reader or Part. While reads fill the buffer they are given (the body
// arrives fast), it reads on and the runs are as long as the buffer
// allows; after a read that comes back short it returns what it has rather
// than wait for the network. At the end of the part's data it returns a
// nil slice and io.EOF; a run of data always comes with a nil error. It
// never allocates.
func (p *Part) Chunk() ([]byte, error) {
	return p.next(true, math.MaxInt)
}

// ChunkNow is Chunk without reading on while reads fill the buffer: it
// returns the data already buffered, and reads more input only when no
// data of the part is buffered. So when it reads, every byte read before has been
// handed out, but a tail (shorter than the delimiter) that may begin the
// delimiter. A reader that must look at each byte before the next is
// read, as track mode does, uses it.
func (p *Part) ChunkNow() ([]byte, error) {
	return p.next(false, math.MaxInt)
}

// Read reads the part's data; it returns io.EOF at its end.
func (p *Part) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c, err := p.next(false, len(b))
	return copy(b, c), err
}

// WriteTo writes the rest of the part's data to w, straight from the
// Reader's buffer in writes as long as the buffer allows. It implements
// io.WriterTo.
func (p *Part) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		c, err := p.Chunk()
		if len(c) > 0 {
			n, werr := w.Write(c)
			total += int64(n)
			if werr != nil {
				return total, werr
			}
			if n != len(c) {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// parseDisposition parses the Content-Disposition header once.
func (p *Part) parseDisposition() {
	if p.dispParsed {
		return
	}
	p.dispParsed = true
	d, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err == nil {
		p.disp, p.dispParams = d, params
	}
}

// FormName returns the name parameter of the part's Content-Disposition if
// it is of type form-data, and "" otherwise.
func (p *Part) FormName() string {
	p.parseDisposition()
	if p.disp != "form-data" {
		return ""
	}
	return p.dispParams["name"]
}

// FileName returns the filename parameter of the part's
// Content-Disposition exactly as sent (decoded if sent as RFC 2231
// filename*, as mime.ParseMediaType does), or "" if there is none. Unlike
// mime/multipart it is not passed through filepath.Base: "dir/a.png" and
// "..\\x" come back as they are, and the caller must sanitize them.
func (p *Part) FileName() string {
	p.parseDisposition()
	return p.dispParams["filename"]
}

// HasFileName reports whether the part's Content-Disposition has a
// filename parameter at all (filename="" counts).
func (p *Part) HasFileName() bool {
	p.parseDisposition()
	_, ok := p.dispParams["filename"]
	return ok
}
