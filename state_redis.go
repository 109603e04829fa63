package reflexupload

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/redisstate"
)

func init() {
	caddy.RegisterModule(new(RedisState))
}

// Defaults of the redis state.
const (
	defaultRedisAddress   = "127.0.0.1:6379"
	defaultRedisKeyPrefix = "reflex_upload:"
	// redisConnectTimeout bounds the ping, the script loads and the
	// subscriptions at provisioning.
	redisConnectTimeout = 5 * time.Second
)

// RedisState keeps the state that several Caddy instances share in Redis:
// the one-writer lock of each resumable upload (with a release request and
// a fencing token) and the progress registry, so that progress and SSE can
// be read, and an upload cancelled, at any instance, whichever receives
// it. One Redis node (or a primary with replicas) is required: Redis
// Cluster is not supported.
//
// The instances that serve one upload root must use the same Redis, db and
// key_prefix; upload roots that share a key prefix share their upload ids
// (a standard upload's id in flight at one is busy at the other), so give
// each root its own prefix. A lock whose instance died is free again after
// 10s; the record of an upload whose instance died goes after 10s too.
type RedisState struct {
	// The Redis server, as host:port. Global placeholders such as
	// {env.REDIS_ADDRESS} are expanded. Default: 127.0.0.1:6379.
	Address string `json:"address,omitempty"`

	// The password of the Redis server (its requirepass). Global
	// placeholders are expanded: give it as {env.REDIS_PASSWORD} rather
	// than in the config. Default: none.
	Password string `json:"password,omitempty"`

	// The Redis database number. Default: 0.
	DB int `json:"db,omitempty"`

	// The prefix of every key and channel the module uses in Redis. Global
	// placeholders are expanded. One prefix per upload root: roots that
	// share a prefix share their upload ids. Default: "reflex_upload:".
	KeyPrefix string `json:"key_prefix,omitempty"`

	mu     sync.Mutex
	client *redis.Client // nil once handed to the upload root's state
}

// CaddyModule returns the Caddy module information.
func (*RedisState) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reflex_upload.state.redis",
		New: func() caddy.Module { return new(RedisState) },
	}
}

// Provision expands the placeholders, fills in the defaults and connects:
// a server that cannot be reached (or refuses the password) is an error.
func (s *RedisState) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	s.Address = repl.ReplaceKnown(s.Address, "")
	s.Password = repl.ReplaceKnown(s.Password, "")
	s.KeyPrefix = repl.ReplaceKnown(s.KeyPrefix, "")
	if s.Address == "" {
		s.Address = defaultRedisAddress
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = defaultRedisKeyPrefix
	}
	if s.DB < 0 {
		return fmt.Errorf("state redis: db %d cannot be negative", s.DB)
	}
	client := redis.NewClient(&redis.Options{Addr: s.Address, Password: s.Password, DB: s.DB})
	pctx, cancel := context.WithTimeout(ctx, redisConnectTimeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return fmt.Errorf("state redis: connecting to %s: %w", s.Address, err)
	}
	s.mu.Lock()
	s.client = client
	s.mu.Unlock()
	return nil
}

// NewState implements State: the Locker and the progress registry of an
// upload root, which take over the client (closed when the root closes).
func (s *RedisState) NewState(o StateOptions) (lock.Locker, progress.Registry, error) {
	s.mu.Lock()
	client := s.client
	s.client = nil
	s.mu.Unlock()
	if client == nil {
		return nil, nil, errors.New("state redis: not provisioned, or in use by another upload root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisConnectTimeout)
	defer cancel()
	locker, err := redisstate.NewLocker(ctx, client, s.KeyPrefix, 0)
	if err != nil {
		_ = client.Close()
		return nil, nil, fmt.Errorf("state redis: %w", err)
	}
	reg, err := redisstate.NewProgress(ctx, client, s.KeyPrefix, redisstate.ProgressOptions{Idle: o.Idle})
	if err != nil {
		_ = locker.Close()
		_ = client.Close()
		return nil, nil, fmt.Errorf("state redis: %w", err)
	}
	return &redisLocks{Locker: locker, client: client}, reg, nil
}

// Cleanup closes the client unless an upload root took it over.
func (s *RedisState) Cleanup() error {
	s.mu.Lock()
	client := s.client
	s.client = nil
	s.mu.Unlock()
	if client != nil {
		return client.Close()
	}
	return nil
}

// UnmarshalCaddyfile reads the redis state:
//
//	state redis {
//		address    <host:port>
//		password   <secret>
//		db         <n>
//		key_prefix <prefix>
//	}
//
// The block is optional; each option is given once.
func (s *RedisState) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the backend's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("state redis option '%s' is given twice", opt)
		}
		seen[opt] = true
		var v string
		switch opt {
		case "address", "password", "db", "key_prefix":
			if !d.AllArgs(&v) {
				return d.Errf("wrong argument count: %s takes one value", opt)
			}
		default:
			return d.Errf("unrecognized state redis option '%s'", opt)
		}
		switch opt {
		case "address":
			s.Address = v
		case "password":
			s.Password = v
		case "db":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("parsing db: %q is not a database number", v)
			}
			s.DB = n
		case "key_prefix":
			s.KeyPrefix = v
		}
	}
	return nil
}

// redisLocks is the Locker of the redis state, which owns its client: the
// root closes the registry first, then this.
type redisLocks struct {
	*redisstate.Locker
	client *redis.Client
}

// Close ends the Locker's subscription and closes the client.
func (l *redisLocks) Close() error {
	err := l.Locker.Close()
	if cerr := l.client.Close(); err == nil {
		err = cerr
	}
	return err
}

// Interface guards
var (
	_ State                 = (*RedisState)(nil)
	_ caddy.Provisioner     = (*RedisState)(nil)
	_ caddy.CleanerUpper    = (*RedisState)(nil)
	_ caddyfile.Unmarshaler = (*RedisState)(nil)
)
