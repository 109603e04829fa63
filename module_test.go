package reflexupload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestUnmarshalCaddyfile(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name  string
		input string
		want  Handler
		err   string // substring of the error; "" means it parses
	}{
		{name: "empty", input: `reflex_upload`, want: Handler{}},
		{name: "empty block", input: "reflex_upload {\n}", want: Handler{}},
		{name: "every option", input: `reflex_upload {
			root /srv/up
			prefix /files
			max_size 10MiB
			min_size 1kB
			max_files 3
			max_request_size 1GB
			max_fields_size 8MiB
			accept image/* .pdf
			accept text/plain
			on_conflict reject
			fsync off
			hash none
			owner {http.auth.user.id}
			mode forward
			forward_fail_status 4xx 502
			cors_origins http://localhost:3000 https://app.example.com
			cors_credentials
			progress_retention 5m
			idle_timeout 30s
			chunk_expiry 48h
		}`, want: Handler{
			Root: "/srv/up", Prefix: "/files", MaxSize: 10 << 20, MinSize: 1000, MaxFiles: 3,
			MaxRequestSize: 1_000_000_000, MaxFieldsSize: 8 << 20, Accept: []string{"image/*", ".pdf", "text/plain"},
			OnConflict: "reject", Fsync: &off, Hash: "none", Owner: "{http.auth.user.id}", Mode: "forward",
			ForwardFailStatus: []string{"4xx", "502"}, CORSOrigins: []string{"http://localhost:3000", "https://app.example.com"},
			CORSCredentials:   true,
			ProgressRetention: caddy.Duration(5 * time.Minute), IdleTimeout: caddy.Duration(30 * time.Second),
			ChunkExpiry: caddy.Duration(48 * time.Hour),
		}},
		{name: "placeholder root kept raw", input: "reflex_upload {\nroot {env.UPLOADS}\n}", want: Handler{Root: "{env.UPLOADS}"}},
		{name: "fsync on", input: "reflex_upload {\nfsync on\n}", want: Handler{}},
		{name: "rename", input: "reflex_upload {\non_conflict rename\n}", want: Handler{OnConflict: "rename"}},
		{name: "overwrite", input: "reflex_upload {\non_conflict overwrite\n}", want: Handler{OnConflict: "overwrite"}},
		{name: "max_files zero", input: "reflex_upload {\nmax_files 0\n}", want: Handler{}},

		{name: "argument on directive", input: `reflex_upload extra`, err: "wrong argument count"},
		{name: "unknown option", input: "reflex_upload {\nmax_zise 1MB\n}", err: "unrecognized reflex_upload option 'max_zise'"},
		{name: "duplicate option", input: "reflex_upload {\nmax_size 1MB\nmax_size 2MB\n}", err: "option 'max_size' is given twice"},
		{name: "root no arg", input: "reflex_upload {\nroot\n}", err: "wrong argument count"},
		{name: "root two args", input: "reflex_upload {\nroot a b\n}", err: "wrong argument count"},
		{name: "prefix no arg", input: "reflex_upload {\nprefix\n}", err: "wrong argument count"},
		{name: "max_size bad", input: "reflex_upload {\nmax_size lots\n}", err: "parsing max_size"},
		{name: "max_size no arg", input: "reflex_upload {\nmax_size\n}", err: "wrong argument count"},
		{name: "max_size huge", input: "reflex_upload {\nmax_size 16EiB\n}", err: "parsing max_size"},
		{name: "min_size bad", input: "reflex_upload {\nmin_size -1\n}", err: "parsing min_size"},
		{name: "max_request_size bad", input: "reflex_upload {\nmax_request_size 1QB\n}", err: "parsing max_request_size"},
		{name: "max_request_size two args", input: "reflex_upload {\nmax_request_size 1MB 2MB\n}", err: "wrong argument count"},
		{name: "max_fields_size bad", input: "reflex_upload {\nmax_fields_size big\n}", err: "parsing max_fields_size"},
		{name: "max_fields_size zero", input: "reflex_upload {\nmax_fields_size 0\n}", err: "parsing max_fields_size: must be more than 0"},
		{name: "max_fields_size no arg", input: "reflex_upload {\nmax_fields_size\n}", err: "wrong argument count"},
		{name: "max_fields_size twice", input: "reflex_upload {\nmax_fields_size 1MiB\nmax_fields_size 2MiB\n}", err: "option 'max_fields_size' is given twice"},
		{name: "max_files not a number", input: "reflex_upload {\nmax_files many\n}", err: "parsing max_files"},
		{name: "max_files negative", input: "reflex_upload {\nmax_files -2\n}", err: "parsing max_files"},
		{name: "max_files no arg", input: "reflex_upload {\nmax_files\n}", err: "wrong argument count"},
		{name: "accept no arg", input: "reflex_upload {\naccept\n}", err: "wrong argument count"},
		{name: "accept bad entry", input: "reflex_upload {\naccept png\n}", err: "parsing accept"},
		{name: "accept bad wildcard", input: "reflex_upload {\naccept image/p*\n}", err: "parsing accept"},
		{name: "on_conflict bad", input: "reflex_upload {\non_conflict merge\n}", err: "parsing on_conflict"},
		{name: "on_conflict no arg", input: "reflex_upload {\non_conflict\n}", err: "wrong argument count"},
		{name: "fsync bad", input: "reflex_upload {\nfsync maybe\n}", err: "parsing fsync"},
		{name: "fsync no arg", input: "reflex_upload {\nfsync\n}", err: "wrong argument count"},
		{name: "hash bad", input: "reflex_upload {\nhash md5\n}", err: "parsing hash"},
		{name: "owner no arg", input: "reflex_upload {\nowner\n}", err: "wrong argument count"},
		{name: "progress_retention bad", input: "reflex_upload {\nprogress_retention soon\n}", err: "parsing progress_retention"},
		{name: "progress_retention zero", input: "reflex_upload {\nprogress_retention 0s\n}", err: "parsing progress_retention"},
		{name: "progress_retention no arg", input: "reflex_upload {\nprogress_retention\n}", err: "wrong argument count"},
		{name: "idle_timeout bad", input: "reflex_upload {\nidle_timeout -1s\n}", err: "parsing idle_timeout"},
		{name: "chunk_expiry bad", input: "reflex_upload {\nchunk_expiry 1x\n}", err: "parsing chunk_expiry"},
		{name: "mode bad", input: "reflex_upload {\nmode proxy\n}", err: "parsing mode"},
		{name: "mode no arg", input: "reflex_upload {\nmode\n}", err: "wrong argument count"},
		{name: "forward_fail_status bad", input: "reflex_upload {\nforward_fail_status 6xx\n}", err: "parsing forward_fail_status"},
		{name: "forward_fail_status code bad", input: "reflex_upload {\nforward_fail_status 99\n}", err: "parsing forward_fail_status"},
		{name: "forward_fail_status no arg", input: "reflex_upload {\nforward_fail_status\n}", err: "wrong argument count"},
		{name: "cors_origins path", input: "reflex_upload {\ncors_origins http://a.example/x\n}", err: "parsing cors_origins"},
		{name: "cors_origins scheme", input: "reflex_upload {\ncors_origins ftp://a.example\n}", err: "parsing cors_origins"},
		{name: "cors_origins no arg", input: "reflex_upload {\ncors_origins\n}", err: "wrong argument count"},
		{name: "cors_credentials arg", input: "reflex_upload {\ncors_credentials yes\n}", err: "wrong argument count"},
		{name: "hash two args", input: "reflex_upload {\nhash sha256 none\n}", err: "wrong argument count"},
		{name: "storage and state", input: "reflex_upload {\nstorage local\nstate memory\n}", want: Handler{
			StorageRaw: json.RawMessage(`{"backend":"local"}`), StateRaw: json.RawMessage(`{"backend":"memory"}`)}},
		{name: "storage unknown", input: "reflex_upload {\nstorage ftp\n}", err: `parsing storage: unknown backend "ftp"`},
		{name: "state unknown", input: "reflex_upload {\nstate etcd\n}", err: `parsing state: unknown backend "etcd"`},
		{name: "storage no arg", input: "reflex_upload {\nstorage\n}", err: "wrong argument count"},
		{name: "storage twice", input: "reflex_upload {\nstorage local\nstorage local\n}", err: "given twice"},
		{name: "storage local with options", input: "reflex_upload {\nstorage local {\nbucket x\n}\n}", err: "takes no options"},
		{name: "state memory with an arg", input: "reflex_upload {\nstate memory x\n}", err: "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v; want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("parsed\n%+v\nwant\n%+v", h, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Handler {
		return Handler{Prefix: "/_upload", OnConflict: "overwrite", Hash: "sha256", Mode: "store"}
	}
	for _, tc := range []struct {
		name   string
		modify func(*Handler)
		err    string
	}{
		{name: "defaults", modify: func(*Handler) {}},
		{name: "root prefix", modify: func(h *Handler) { h.Prefix = "/" }},
		{name: "nested prefix", modify: func(h *Handler) { h.Prefix = "/api/files" }},
		{name: "prefix without slash", modify: func(h *Handler) { h.Prefix = "upload" }, err: "prefix"},
		{name: "prefix trailing slash", modify: func(h *Handler) { h.Prefix = "/upload/" }, err: "prefix"},
		{name: "prefix unclean", modify: func(h *Handler) { h.Prefix = "/a/../b" }, err: "prefix"},
		{name: "prefix placeholder", modify: func(h *Handler) { h.Prefix = "/{x}" }, err: "prefix"},
		{name: "negative size", modify: func(h *Handler) { h.MaxSize = -1 }, err: "negative"},
		{name: "negative files", modify: func(h *Handler) { h.MaxFiles = -1 }, err: "negative"},
		{name: "negative fields size", modify: func(h *Handler) { h.MaxFieldsSize = -1 }, err: "max_fields_size"},
		{name: "min over max", modify: func(h *Handler) { h.MinSize, h.MaxSize = 10, 5 }, err: "min_size"},
		{name: "min without max", modify: func(h *Handler) { h.MinSize = 10 }},
		{name: "bad conflict", modify: func(h *Handler) { h.OnConflict = "merge" }, err: "on_conflict"},
		{name: "bad hash", modify: func(h *Handler) { h.Hash = "md5" }, err: "hash"},
		{name: "bad mode", modify: func(h *Handler) { h.Mode = "proxy" }, err: "mode"},
		{name: "credentials with any origin", modify: func(h *Handler) { h.CORSOrigins, h.CORSCredentials = []string{"*"}, true }, err: "cors_credentials"},
		{name: "origin with a path", modify: func(h *Handler) { h.CORSOrigins = []string{"https://app.example/x"} }, err: "cors_origins"},
		{name: "origin without scheme", modify: func(h *Handler) { h.CORSOrigins = []string{"app.example"} }, err: "cors_origins"},
		{name: "good origins", modify: func(h *Handler) { h.CORSOrigins = []string{"https://app.example", "http://localhost:3000"} }},
		{name: "negative retention", modify: func(h *Handler) { h.ProgressRetention = -1 }, err: "progress_retention"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := valid()
			tc.modify(&h)
			err := h.Validate()
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error = %v; want one containing %q", err, tc.err)
			}
		})
	}
}

func TestParseAccept(t *testing.T) {
	for _, tc := range []struct {
		entries []string
		ok      bool
	}{
		{[]string{"image/png", "image/*", ".pdf", "*/*", "*", "application/vnd.ms-excel", "IMAGE/PNG", ".TAR.GZ"}, true},
		{[]string{"png"}, false},
		{[]string{"."}, false},
		{[]string{"image/"}, false},
		{[]string{"/png"}, false},
		{[]string{"image/png/x"}, false},
		{[]string{"*/png"}, false},
		{[]string{"image/p*"}, false},
		{[]string{".p/ng"}, false},
		{[]string{"image/png;;"}, false},
	} {
		_, err := filecheck.ParseAccept(tc.entries)
		if (err == nil) != tc.ok {
			t.Errorf("parseAccept(%q) error = %v; want ok=%v", tc.entries, err, tc.ok)
		}
	}
}

// TestAdaptExample adapts Caddyfile.example and compares it with the golden
// JSON in testdata (go test -run TestAdaptExample -update rewrites it).
func TestAdaptExample(t *testing.T) {
	src, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("adapting Caddyfile.example warned: %+v", warnings)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	const golden = "testdata/Caddyfile.example.json"
	if *update {
		if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("Caddyfile.example adapts to\n%s\nwant (%s)\n%s", pretty.Bytes(), golden, want)
	}
	// The module orders itself: its handler runs before the file server.
	upload := bytes.Index(out, []byte(`"handler":"reflex_upload"`))
	files := bytes.Index(out, []byte(`"handler":"file_server"`))
	if upload < 0 || files < 0 || upload > files {
		t.Errorf("reflex_upload (at %d) must come before file_server (at %d) in %s", upload, files, out)
	}
}

// TestDirectiveOrder checks that a site with reflex_upload beside a handle
// block, reverse_proxy or file_server needs no order line.
func TestDirectiveOrder(t *testing.T) {
	for _, other := range []string{"reverse_proxy localhost:9", "file_server", "handle {\n\trespond ok\n}", "respond ok"} {
		src := ":80 {\n" + other + "\nreflex_upload\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			t.Fatalf("adapting %q: %v", src, err)
		}
		if i := bytes.Index(out, []byte(`"handler":"reflex_upload"`)); i < 0 || i > bytes.Index(out, []byte(`"handler":`)) {
			t.Errorf("with %q, reflex_upload is not the first handler: %s", other, out)
		}
	}
}

// TestStaleTempsRemoved: provisioning removes temp files a crash left
// behind (older than an hour) and keeps recent ones and other files.
func TestStaleTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, reservedDir)
	if err := os.MkdirAll(priv, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for name, mtime := range map[string]time.Time{tempPrefix + "old": old, tempPrefix + "new": time.Now(), "keep.json": old} {
		p := filepath.Join(priv, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	u, err := openUploadRoot(dir, LocalStorage{}, MemoryState{}, StateOptions{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer u.release()
	entries, _ := os.ReadDir(priv)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "keep.json,tmp-new,tus" {
		t.Fatalf("private folder after provisioning: %v", names)
	}
}

// TestBackendsProvision loads the storage and state modules named in JSON,
// and refuses one that is not registered.
func TestBackendsProvision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		storage, state string
		err            string
	}{
		{name: "defaults"},
		{name: "named", storage: `{"backend":"local"}`, state: `{"backend":"memory"}`},
		{name: "unknown storage", storage: `{"backend":"ftp"}`, err: "loading storage"},
		{name: "unknown state", state: `{"backend":"etcd"}`, err: "loading state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			h := &Handler{Root: t.TempDir()}
			if tc.storage != "" {
				h.StorageRaw = json.RawMessage(tc.storage)
			}
			if tc.state != "" {
				h.StateRaw = json.RawMessage(tc.state)
			}
			err := h.Provision(ctx)
			defer h.Cleanup()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Provision: %v; want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := h.root.stored.(*store.Local); !ok {
				t.Errorf("storage is %T; want the local store", h.root.stored)
			}
			if _, ok := h.root.locks.(*lock.Memory); !ok {
				t.Errorf("locks are %T; want the memory locker", h.root.locks)
			}
		})
	}
}

// The sweeper follows the chunk_expiry it is given at once: a root opened
// with the default (a sweep every 10 minutes) and then set to a short
// expiry, as a config load or reload does, removes an expired upload
// within seconds.
func TestSweeperFollowsExpiry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u, err := openUploadRoot(dir, LocalStorage{}, MemoryState{}, StateOptions{Idle: defaultChunkExpiry}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer u.release()
	ctx, id := context.Background(), tus.NewID()
	if err := u.data.Create(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := u.states.Save(ctx, &tus.Info{ID: id, Length: 3, Expires: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the sweeper is waiting on its first timer
	u.setSweepInterval(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, reservedDir, "tus", id)); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired upload is still there 5 s after chunk_expiry was set to 2 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
