package formstream

import (
	"bytes"
)

// Verdicts of delimAfter.
const (
	delimUnknown = iota // more input is needed
	delimNo             // data
	delimYes            // the end of the part's data
)

// delimAfter tells, from the bytes a that follow a "--boundary" match in a
// part's data, whether the match ends the data: it does when followed by a
// space, tab, CR, LF or "--", like in mime/multipart.
func delimAfter(a []byte) int {
	if len(a) == 0 {
		return delimUnknown
	}
	switch a[0] {
	case ' ', '\t', '\r', '\n':
		return delimYes
	case '-':
		if len(a) == 1 {
			return delimUnknown
		}
		if a[1] == '-' {
			return delimYes
		}
	}
	return delimNo
}

// scan extends rd.pend over the buffered bytes of the current part's data,
// up to the delimiter that ends it (setting rd.delim) or to where more
// input is needed to tell.
func (rd *Reader) scan() {
	d := rd.nlDashBoundary
	for !rd.delim {
		b := rd.buf[rd.r+rd.pend : rd.w]
		if rd.atStart {
			db := rd.dashBoundary
			if len(b) < len(db) && bytes.HasPrefix(db, b) {
				return
			}
			rd.atStart = false
			if bytes.HasPrefix(b, db) {
				switch delimAfter(b[len(db):]) {
				case delimUnknown:
					rd.atStart = true
					return
				case delimYes:
					rd.delim, rd.delimSkip = true, 0
					return
				}
				rd.pend += len(db)
			}
			continue
		}
		i := rd.find.index(b)
		if i < 0 {
			// Everything is data but a tail that may begin the delimiter.
			// d has one CR, its first byte: only the last CR can begin it.
			k := max(len(b)-len(d)+1, 0)
			if j := bytes.LastIndexByte(b[k:], '\r'); j >= 0 && bytes.HasPrefix(d, b[k+j:]) {
				rd.pend += k + j
			} else {
				rd.pend += len(b)
			}
			return
		}
		switch delimAfter(b[i+len(d):]) {
		case delimUnknown:
			rd.pend += i
			return
		case delimYes:
			rd.pend += i
			rd.delim, rd.delimSkip = true, 2
			return
		}
		// d cannot overlap itself (one CR), so the search goes on after it.
		rd.pend += i + len(d)
	}
}

// finder finds the delimiter d ("\r\n--" + boundary) in part data.
//
// bytes.Index is slow on binary data: it calls IndexByte for d's first
// byte, CR, which random data has once every 256 bytes, and each call ends
// in a mispredicted branch; it reaches about a third of the speed of
// reading the data. finder instead samples one 2-byte gram every len(d)-1
// bytes, so every occurrence of d spans one sample, and looks its hash up
// in a table of d's grams; only samples whose hash is in the table (d's
// grams, and about one in fifteen others at most) lead to comparisons.
// When too many samples hit (data made of d's bytes), it falls back to
// bytes.Index. The table is small (1 KiB), since every upload in flight
// holds one: an exact bitmap of the 65536 grams would take 8 KiB.
type finder struct {
	d    []byte
	last [1 << gramHashBits]uint8  // 1 + the last offset in d of a gram with this hash, or 0
	prev [MaxBoundaryLen + 4]uint8 // 1 + the offset before o with a gram of the same hash, or 0
}

const gramHashBits = 10

func gramHash(g uint16) uint32 {
	return uint32(g) * 2654435761 >> (32 - gramHashBits)
}

func (f *finder) init(d []byte) {
	f.d = d
	for i := 0; i+1 < len(d); i++ {
		h := gramHash(uint16(d[i])<<8 | uint16(d[i+1]))
		f.prev[i] = f.last[h]
		f.last[h] = uint8(i + 1)
	}
}

// index returns the index of the first occurrence of f.d in s, or -1.
func (f *finder) index(s []byte) int {
	d := f.d
	m, n := len(d), len(s)
	// The occurrences that start in [j-m+2, j] are those that contain the
	// gram at j; j goes up by m-1, so each occurrence contains exactly one
	// sampled gram and they are found in order.
	step := m - 1
	hits := 0
	for j := m - 2; j+1 < n; j += step {
		o := f.last[gramHash(uint16(s[j])<<8|uint16(s[j+1]))]
		if o == 0 {
			continue
		}
		// The offsets in d of grams with this hash, last first.
		for ; o != 0; o = f.prev[o-1] {
			if p := j - int(o-1); p+m <= n && s[p] == d[0] && bytes.Equal(s[p:p+m], d) {
				return p
			}
		}
		hits++
		if hits > 16+(j/step)/3 {
			// No occurrence starts at or before j.
			if i := bytes.Index(s[j+1:], d); i >= 0 {
				return j + 1 + i
			}
			return -1
		}
	}
	return -1
}
