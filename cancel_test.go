package reflexupload

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCancellableBodyless: a request without a body (HEAD, DELETE) that is
// interrupted while it holds an upload keeps its context and its
// connection: it has no body read to unblock, and a read deadline in the
// past ended the context of its connection (its storage requests failed,
// and so did the next request on the connection).
func TestCancellableBodyless(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if err := r.Context().Err(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		ctx, cancel, _, release := cancellable(w, r, 0)
		defer release()
		cancel(errInterrupted) // another request took the upload over
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // the connection's read sees a deadline, if any
		if err := r.Context().Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := srv.Client()
	for _, method := range []string{http.MethodHead, http.MethodDelete, http.MethodGet} {
		req, _ := http.NewRequest(method, srv.URL, nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d; want 200 (the request's context was ended)", method, res.StatusCode)
		}
	}
}
