package reflexupload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// tusDir holds the resumable uploads: {id} is the data received so far and
// {id}.json its state, both private.
var tusDir = path.Join(reservedDir, "tus")

func tusDataPath(id string) string { return path.Join(tusDir, id) }
func tusInfoPath(id string) string { return path.Join(tusDir, id+".json") }

// loadTus reads an upload's state; fs.ErrNotExist when there is none.
func (u *uploadRoot) loadTus(id string) (*tus.Info, error) {
	b, err := u.root.ReadFile(tusInfoPath(id))
	if err != nil {
		return nil, err
	}
	var info tus.Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	if info.Metadata, err = tus.ParseMetadata(info.MetadataRaw); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	return &info, nil
}

// saveTus writes an upload's state atomically.
func (u *uploadRoot) saveTus(info *tus.Info, fsync bool) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	tmp := tusInfoPath(info.ID) + ".tmp"
	f, err := u.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = u.root.Rename(tmp, tusInfoPath(info.ID))
	}
	if err == nil && fsync {
		err = u.syncDir(tusDir)
	}
	if err != nil {
		_ = u.root.Remove(tmp)
	}
	return err
}

// hasTus reports whether a resumable upload id exists (of any owner).
func (u *uploadRoot) hasTus(id string) bool {
	_, err := u.root.Lstat(tusInfoPath(id))
	return err == nil
}

// removeTus removes an upload's data and state.
func (u *uploadRoot) removeTus(id string) {
	_ = u.root.Remove(tusDataPath(id))
	_ = u.root.Remove(tusInfoPath(id))
}

// sweepTus removes the resumable uploads expired at now, except those a
// request is using, and the state files nobody can use (no data, broken).
func (h *Handler) sweepTus(now time.Time) int {
	entries, err := fs.ReadDir(h.root.root.FS(), tusDir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !tus.ValidID(id) || h.root.writing.busy(id) {
			continue
		}
		info, err := h.root.loadTus(id)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.root.removeTus(id)
			removed++
			continue
		}
		if info != nil && now.After(info.Expires) {
			h.root.removeTus(id)
			_ = h.root.progress.Expire(h.ctx, id)
			removed++
		}
	}
	return removed
}

// sweepInterval is how often the sweeper looks for expired uploads.
func sweepInterval(expiry time.Duration) time.Duration {
	return min(max(expiry/4, time.Second), 10*time.Minute)
}

// runSweeper removes expired uploads until the module's context ends.
func (h *Handler) runSweeper() {
	tick := time.NewTicker(sweepInterval(time.Duration(h.ChunkExpiry)))
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
			if n := h.sweepTus(h.root.now()); n > 0 {
				h.logger.Info("removed expired resumable uploads", zap.Int("count", n))
			}
		}
	}
}
