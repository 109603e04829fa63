package httpversions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestTrackLimits: in track mode a body that breaks a limit is cut before
// it reaches the app whole, over every HTTP version, whether the client
// sends its length or streams it. The client gets the module's error, and
// the app never receives the complete body, nor even its close delimiter.
// A body within the limits reaches the app byte-identical.
func TestTrackLimits(t *testing.T) {
	s := startSite(t)
	small := bytes.Repeat([]byte("s"), 100)
	cases := []struct {
		name   string
		files  []filePart
		status int
		code   string
	}{
		{"within the limits", []filePart{{"a.bin", small}, {"b.bin", bytes.Repeat([]byte("b"), maxSize)}, {"c.bin", small}}, http.StatusOK, ""},
		{"one file too many", []filePart{{"1.bin", small}, {"2.bin", small}, {"3.bin", small}, {"4.bin", small}}, http.StatusUnprocessableEntity, "too-many-files"},
		{"max_size + 1 byte", []filePart{{"big.bin", bytes.Repeat([]byte("x"), maxSize+1)}}, http.StatusRequestEntityTooLarge, "file-too-large"},
		{"max_size + 100 bytes, last file", []filePart{{"a.bin", small}, {"big.bin", bytes.Repeat([]byte("x"), maxSize+100)}}, http.StatusRequestEntityTooLarge, "file-too-large"},
		{"max_size + 10 KiB", []filePart{{"big.bin", bytes.Repeat([]byte("x"), maxSize+10<<10)}}, http.StatusRequestEntityTooLarge, "file-too-large"},
	}
	for _, c := range s.clients {
		for _, streamed := range []bool{false, true} {
			for _, tc := range cases {
				name := fmt.Sprintf("%s/streamed=%v/%s", c.name, streamed, tc.name)
				t.Run(name, func(t *testing.T) {
					body, ctype, boundary := multipartBody(t, tc.files...)
					res, answer := c.post(t, s.ctx, "/track", http.Header{testHeader: {name}}, ctype, body, streamed)
					got := s.app.received(t, name)
					if tc.status == http.StatusOK {
						if res.StatusCode != http.StatusOK || string(answer) != "app says 200" {
							t.Fatalf("answer %d %q; want the app's 200", res.StatusCode, answer)
						}
						if len(got) != 1 || !got[0].complete || !bytes.Equal(got[0].body, body) {
							t.Fatalf("the app did not get the body byte-identical: %s", describe(got, len(body)))
						}
						return
					}
					assertError(t, res, answer, tc.status, tc.code)
					closing := []byte("--" + boundary + "--")
					for _, g := range got {
						if g.complete || bytes.Contains(g.body, closing) || len(g.body) >= len(body) {
							t.Fatalf("the app got a body that breaks a limit whole: %s", describe(got, len(body)))
						}
					}
				})
			}
		}
	}
}

// describe tells what the app received, for failure messages.
func describe(got []appRequest, sent int) string {
	if len(got) == 0 {
		return "no request"
	}
	var b bytes.Buffer
	for i, g := range got {
		fmt.Fprintf(&b, "request %d: %d of %d bytes, complete %v; ", i, len(g.body), sent, g.complete)
	}
	return b.String()
}

// TestTrackClientGone: a client that aborts its upload mid-body (what
// Reflex's rx.cancel_upload does: an aborted fetch) is reported as an error
// in progress, never as done, over every HTTP version. The abort races with
// the proxy, so each version is tried several times.
func TestTrackClientGone(t *testing.T) {
	s := startSite(t)
	const tries = 10
	for _, c := range s.clients {
		t.Run(c.name, func(t *testing.T) {
			for i := range tries {
				id := fmt.Sprintf("gone-%d-%d", c.proto, i)
				if c.name == "h2c" {
					id += "c"
				}
				p := abortUpload(t, s, c, id)
				if p.State != "error" || p.Received >= p.Size || p.Status != http.StatusBadRequest || p.Code != "invalid-request" {
					t.Errorf("try %d: progress after the client went away: %+v; want state error, status 400, invalid-request, received < size", i, p)
				}
			}
		})
	}
}

// abortUpload starts an upload to /track (of a file within max_size), aborts
// it once part of it has arrived, and returns its final progress.
func abortUpload(t *testing.T, s *site, c *client, id string) progress {
	t.Helper()
	const sent = maxSize / 2
	head := "--gone\r\nContent-Disposition: form-data; name=\"files\"; filename=\"gone.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	size := int64(len(head) + maxSize + len("\r\n--gone--\r\n"))
	ctx, abort := context.WithCancel(s.ctx)
	defer abort()
	body := io.MultiReader(bytes.NewReader(append([]byte(head), bytes.Repeat([]byte("g"), sent)...)), stallReader{ctx})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/track", body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "multipart/form-data; boundary=gone")
	req.Header.Set("X-Progress-ID", id)
	req.Header.Set(testHeader, id)
	done := make(chan error, 1)
	go func() {
		res, err := c.http.Do(req)
		if err == nil {
			// The answer may still reach a client that has just aborted:
			// then it is the module's, saying why.
			answer, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var e errorBody
			if json.Unmarshal(answer, &e) != nil || res.StatusCode != http.StatusBadRequest || e.Code != "invalid-request" {
				err = fmt.Errorf("answered %d %q", res.StatusCode, answer)
			}
		}
		done <- err
	}()
	for end := time.Now().Add(10 * time.Second); ; {
		p := s.progressOf(t, "/track", id)
		if p.Received >= int64(len(head)+sent) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the upload never got going: %+v", p)
		}
		time.Sleep(5 * time.Millisecond)
	}
	abort()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("the aborted request ended with %v; want context.Canceled", err)
	}
	for end := time.Now().Add(10 * time.Second); ; {
		p := s.progressOf(t, "/track", id)
		if p.State != "uploading" {
			return p
		}
		if time.Now().After(end) {
			t.Fatalf("the aborted upload is still uploading after 10 s: %+v", p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stallReader sends nothing until its context ends.
type stallReader struct{ ctx context.Context }

func (r stallReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}
