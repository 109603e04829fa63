package reflexupload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
)

// pacedBody gives a body n bytes per read, the last ones with io.EOF or
// not, and counts what it gave.
type pacedBody struct {
	b           []byte
	n, given    int
	eofWithData bool
}

func (p *pacedBody) Read(b []byte) (int, error) {
	if p.given == len(p.b) {
		return 0, io.EOF
	}
	k := copy(b[:min(len(b), p.n)], p.b[p.given:])
	p.given += k
	if p.eofWithData && p.given == len(p.b) {
		return k, io.EOF
	}
	return k, nil
}

// TestTrackReader reads a tracked body as a proxy does, with many read
// sizes: a body within the limits comes out byte-identical; before the
// client's body has ended, the last holdBack bytes read never come out; a
// body that breaks a limit, or that ends before its Content-Length, never
// comes out whole, nor its close delimiter.
func TestTrackReader(t *testing.T) {
	t.Parallel()
	h := &Handler{MaxSize: 20000, MaxFiles: 3, check: filecheck.Rules{MaxSize: 20000}}
	small := bytes.Repeat([]byte("s"), 100)
	tests := []struct {
		name  string
		parts []part
		short int    // bytes the body lacks of its Content-Length
		code  string // "" for a body that passes
	}{
		{"within the limits", []part{{name: "a.bin", data: small}, {name: "b.bin", data: bytes.Repeat([]byte("b"), 20000)}, {name: "c.bin", data: small}}, 0, ""},
		{"tiny body", []part{{name: "a.bin", data: []byte("x")}}, 0, ""},
		{"one file too many", []part{{name: "1", data: small}, {name: "2", data: small}, {name: "3", data: small}, {name: "4", data: small}}, 0, "too-many-files"},
		{"max_size + 1", []part{{name: "big.bin", data: bytes.Repeat([]byte("x"), 20001)}}, 0, "file-too-large"},
		{"ends before its length", []part{{name: "a.bin", data: bytes.Repeat([]byte("x"), 5000)}}, 10, ""},
	}
	for _, tc := range tests {
		body, ctype := multipartBody(t, tc.parts...)
		_, params, _ := mime.ParseMediaType(ctype)
		closing := []byte("--" + params["boundary"] + "--")
		for _, srcRead := range []int{3, 1000, 4096, 1 << 20} {
			for _, appRead := range []int{1, 3000, 32 << 10} {
				for _, eofWithData := range []bool{false, true} {
					name := fmt.Sprintf("%s/src %d/app %d/eof with data %v", tc.name, srcRead, appRead, eofWithData)
					src := &pacedBody{b: body.Bytes(), n: srcRead, eofWithData: eofWithData}
					tr := newTrackReader(h, &bodyReader{r: src, declared: int64(body.Len() + tc.short)}, params["boundary"])
					var out []byte
					var err error
					for err == nil {
						buf := make([]byte, appRead)
						var n int
						n, err = tr.Read(buf)
						out = append(out, buf[:n]...)
						if src.given < len(src.b) && len(out) > max(src.given-holdBack, 0) {
							t.Fatalf("%s: %d bytes out after %d read: the last %d must wait for the end", name, len(out), src.given, holdBack)
						}
					}
					verdict := tr.stop()
					var ue *uploadError
					switch {
					case tc.code != "":
						if !errors.As(verdict, &ue) || ue.Code != tc.code || !errors.Is(err, verdict) {
							t.Fatalf("%s: read error %v, verdict %v; want %s", name, err, verdict, tc.code)
						}
					case tc.short > 0:
						if verdict != nil || !errors.Is(err, errBodyShort) || !errors.Is(tr.clientErr(), errBodyShort) {
							t.Fatalf("%s: read error %v, verdict %v; want errBodyShort", name, err, verdict)
						}
					default:
						if err != io.EOF || verdict != nil || !bytes.Equal(out, body.Bytes()) || len(tr.files) != len(tc.parts) {
							t.Fatalf("%s: %d of %d bytes out, error %v, verdict %v, %d files", name, len(out), body.Len(), err, verdict, len(tr.files))
						}
						continue
					}
					if len(out) >= body.Len() || bytes.Contains(out, closing) {
						t.Fatalf("%s: %d of %d bytes came out (close delimiter: %v)", name, len(out), body.Len(), bytes.Contains(out, closing))
					}
				}
			}
		}
	}
}
