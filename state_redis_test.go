package reflexupload

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// TestRedisStateCaddyfile parses "state redis" in the directive into the
// JSON of the handler's state.
func TestRedisStateCaddyfile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, input string
		want        string // the state JSON
		err         string
	}{
		{name: "bare", input: "state redis", want: `{"backend":"redis"}`},
		{name: "empty block", input: "state redis {\n}", want: `{"backend":"redis"}`},
		{name: "all options", input: "state redis {\naddress 10.0.0.5:6380\npassword {env.REDIS_PASSWORD}\ndb 2\nkey_prefix site1:\n}",
			want: `{"address":"10.0.0.5:6380","backend":"redis","db":2,"key_prefix":"site1:","password":"{env.REDIS_PASSWORD}"}`},
		{name: "db zero", input: "state redis {\ndb 0\n}", want: `{"backend":"redis"}`},

		{name: "argument after the name", input: "state redis 127.0.0.1:6379", err: "wrong argument count"},
		{name: "unknown option", input: "state redis {\nhost x\n}", err: "unrecognized state redis option 'host'"},
		{name: "address twice", input: "state redis {\naddress a:1\naddress b:2\n}", err: "state redis option 'address' is given twice"},
		{name: "address no value", input: "state redis {\naddress\n}", err: "wrong argument count: address takes one value"},
		{name: "password two values", input: "state redis {\npassword a b\n}", err: "wrong argument count: password takes one value"},
		{name: "key_prefix no value", input: "state redis {\nkey_prefix\n}", err: "wrong argument count: key_prefix takes one value"},
		{name: "db not a number", input: "state redis {\ndb one\n}", err: `parsing db: "one" is not a database number`},
		{name: "db negative", input: "state redis {\ndb -1\n}", err: `parsing db: "-1" is not a database number`},
		{name: "db twice", input: "state redis {\ndb 1\ndb 1\n}", err: "state redis option 'db' is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("reflex_upload {\n" + tc.input + "\n}"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v; want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got := normalJSON(t, h.StateRaw); got != tc.want {
				t.Fatalf("state JSON %s; want %s", got, tc.want)
			}
		})
	}
}

// normalJSON gives raw with its keys sorted.
func normalJSON(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("state JSON %s: %v", raw, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// provisionRedis provisions a handler on root with the redis state of
// JSON stateJSON and a chunk_expiry of 1h.
func provisionRedis(t *testing.T, root, stateJSON string) (*Handler, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h := &Handler{Root: root, StateRaw: json.RawMessage(stateJSON), ChunkExpiry: caddy.Duration(time.Hour)}
	err := h.Provision(ctx)
	if err != nil {
		h.Cleanup()
		return nil, err
	}
	return h, nil
}

// TestRedisStateProvision connects to a real Redis: placeholders are
// expanded, two upload roots with the same key prefix share their upload
// ids, an upload between requests keeps its record for chunk_expiry, a server that cannot be reached or refuses the password is an error
// at provisioning, and the connections go when the handler is cleaned up.
func TestRedisStateProvision(t *testing.T) {
	addr := enginetest.Redis(t)
	t.Setenv("REFLEX_TEST_REDIS", addr)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	defer raw.Close()
	ctx := context.Background()

	clients := func() int {
		t.Helper()
		list, err := raw.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "\n")
	}
	before := clients() // this test's own connection

	base := t.TempDir()
	state := `{"backend":"redis","address":"{env.REFLEX_TEST_REDIS}","db":3,"key_prefix":"t1:"}`
	a, err := provisionRedis(t, filepath.Join(base, "a"), state)
	if err != nil {
		t.Fatal(err)
	}
	b, err := provisionRedis(t, filepath.Join(base, "b"), state)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.root.locks.(*redisLocks); !ok {
		t.Fatalf("locks are %T; want the redis locker", a.root.locks)
	}
	key := progress.Key{Owner: "o", ID: "shared-id"}
	up, err := a.root.progress.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.root.progress.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: 10}); !errors.Is(err, progress.ErrIDInUse) {
		t.Errorf("Start of the same id on another root with the same prefix: %v; want ErrIDInUse", err)
	}
	snap, ok, err := b.root.progress.Lookup(ctx, key)
	if err != nil || !ok || snap.State != progress.StateUploading {
		t.Errorf("Lookup on the other root: %+v, %v, %v; want uploading", snap, ok, err)
	}
	up.Leave()
	db3 := redis.NewClient(&redis.Options{Addr: addr, DB: 3})
	keys, err := db3.Keys(ctx, "t1:progress:up:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("records in db 3 under t1: %q, %v; want one", keys, err)
	}
	// Between requests, the record stays for chunk_expiry (1h), not the
	// registry's default (24h).
	if ttl, err := db3.PTTL(ctx, keys[0]).Result(); err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL of the record after Leave: %v, %v; want chunk_expiry, 1h", ttl, err)
	}
	db3.Close()

	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// Every connection of the two handlers (commands and subscriptions)
	// goes with the roots.
	for deadline := time.Now().Add(5 * time.Second); clients() != before; {
		if time.Now().After(deadline) {
			list, _ := raw.ClientList(ctx).Result()
			t.Fatalf("%d connections to Redis after cleanup; want %d:\n%s", clients(), before, list)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// With a password required: the right one, from a placeholder, is
	// accepted; a wrong one is an error.
	if err := raw.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REFLEX_TEST_REDIS_PASSWORD", "s3cret")
	c, err := provisionRedis(t, filepath.Join(base, "c"), `{"backend":"redis","address":"`+addr+`","password":"{env.REFLEX_TEST_REDIS_PASSWORD}"}`)
	if err != nil {
		t.Fatalf("Provision with the password from a placeholder: %v", err)
	}
	if err := c.Cleanup(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, state, err string }{
		{name: "unreachable", state: `{"backend":"redis","address":"127.0.0.1:1"}`, err: "state redis: connecting to 127.0.0.1:1"},
		{name: "wrong password", state: `{"backend":"redis","address":"` + addr + `","password":"nope"}`, err: "state redis: connecting to " + addr},
		{name: "no password", state: `{"backend":"redis","address":"` + addr + `"}`, err: "state redis: connecting to " + addr},
		{name: "negative db", state: `{"backend":"redis","address":"` + addr + `","db":-1}`, err: "state redis: db -1 cannot be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := provisionRedis(t, t.TempDir(), tc.state)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Provision: %v; want an error containing %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "nope") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	for deadline := time.Now().Add(5 * time.Second); clients() != before; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to Redis after the failed provisionings; want %d", clients(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
