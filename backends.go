package reflexupload

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// Backends are Caddy guest modules, chosen in the directive as reverse_proxy
// chooses its transport: "storage" in the http.reflex_upload.storage
// namespace (default local), "state" in http.reflex_upload.state (default
// memory). A new backend implements one of the two interfaces below.

func init() {
	caddy.RegisterModule(LocalStorage{})
	caddy.RegisterModule(MemoryState{})
}

// Storage is a storage backend: where an upload root keeps its files and
// its resumable uploads.
type Storage interface {
	// OpenStorage opens the storage of the upload root dir (an absolute
	// path: the root option).
	OpenStorage(dir string) (Stored, error)
}

// Stored is an open storage: the store of the files (store.Store), the
// data of resumable uploads (tus.Data, with the optional tus.Reader and
// tus.LengthDeferrer) and their state.
type Stored interface {
	store.Store
	tus.Data
	// TusStates gives the state of resumable uploads, saved durably (when
	// fsync) before an answer counts on it.
	TusStates(fsync bool) tus.States
	// TusFile is the name that a Publisher's Put takes to publish the
	// complete resumable upload id.
	TusFile(id string) string
	Close() error
}

// State is a shared-state backend: the one-writer lock of resumable
// uploads and the progress registry (progress, cancel) of an upload root.
// The root closes the registry when it closes, and the Locker too when it
// is an io.Closer.
type State interface {
	NewState(StateOptions) (lock.Locker, progress.Registry, error)
}

// StateOptions is what a state backend is told about the upload root it
// makes the state of.
type StateOptions struct {
	// Idle is how long a resumable upload between requests stays in flight
	// (the chunk_expiry option).
	Idle time.Duration
}

// LocalStorage keeps the files in the root folder, opened as an os.Root
// (no name reaches outside it), and resumable uploads in its private
// .uploads folder, crash-safe. It is the default storage and takes no
// options.
type LocalStorage struct{}

// CaddyModule returns the Caddy module information.
func (LocalStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reflex_upload.storage.local",
		New: func() caddy.Module { return new(LocalStorage) },
	}
}

// OpenStorage implements Storage.
func (LocalStorage) OpenStorage(dir string) (Stored, error) { return store.OpenLocal(dir) }

// UnmarshalCaddyfile reads "storage local": no options.
func (*LocalStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error { return noOptions(d) }

// MemoryState keeps the locks and the progress registry in this process.
// It is the default state and takes no options.
type MemoryState struct{}

// CaddyModule returns the Caddy module information.
func (MemoryState) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reflex_upload.state.memory",
		New: func() caddy.Module { return new(MemoryState) },
	}
}

// NewState implements State.
func (MemoryState) NewState(StateOptions) (lock.Locker, progress.Registry, error) {
	return new(lock.Memory), progress.NewMemory(), nil
}

// UnmarshalCaddyfile reads "state memory": no options.
func (*MemoryState) UnmarshalCaddyfile(d *caddyfile.Dispenser) error { return noOptions(d) }

// noOptions reads a backend that takes no arguments and no block.
func noOptions(d *caddyfile.Dispenser) error {
	d.Next() // the backend's name
	name := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("the %s backend takes no options", name)
	}
	return nil
}

// loadBackends loads the storage and state modules of the configuration,
// or the defaults.
func (h *Handler) loadBackends(ctx caddy.Context) (Storage, State, error) {
	var storage Storage = LocalStorage{}
	if h.StorageRaw != nil {
		mod, err := ctx.LoadModule(h, "StorageRaw")
		if err != nil {
			return nil, nil, fmt.Errorf("loading storage: %w", err)
		}
		storage = mod.(Storage)
	}
	var state State = MemoryState{}
	if h.StateRaw != nil {
		mod, err := ctx.LoadModule(h, "StateRaw")
		if err != nil {
			return nil, nil, fmt.Errorf("loading state: %w", err)
		}
		state = mod.(State)
	}
	return storage, state, nil
}

// unmarshalBackend reads "storage <name> [{…}]" or "state <name> [{…}]":
// the module of that name in the option's namespace, as JSON.
func unmarshalBackend(d *caddyfile.Dispenser, opt string) ([]byte, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	id := "http.reflex_upload." + opt + "." + name
	if _, err := caddy.GetModule(id); err != nil {
		return nil, d.Errf("parsing %s: unknown backend %q", opt, name)
	}
	unm, err := caddyfile.UnmarshalModule(d, id)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, "backend", name, nil), nil
}

// Interface guards
var (
	_ Storage               = LocalStorage{}
	_ Stored                = (*store.Local)(nil)
	_ State                 = MemoryState{}
	_ caddyfile.Unmarshaler = (*LocalStorage)(nil)
	_ caddyfile.Unmarshaler = (*MemoryState)(nil)
)
