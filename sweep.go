package reflexupload

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"go.uber.org/zap"
)

// sweepTus removes the resumable uploads expired at now, except those a
// request of this process is using, and the state files nobody can use
// (no data, broken).
func (u *uploadRoot) sweepTus(now time.Time) int {
	ctx := context.Background()
	ids, err := u.states.List(ctx)
	if err != nil {
		return 0
	}
	removed := 0
	for _, id := range ids {
		if u.writing.busy(id) {
			continue
		}
		info, err := u.states.Load(ctx, id)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			u.removeTus(ctx, id)
			removed++
			continue
		}
		if info != nil && now.After(info.Expires) {
			u.removeTus(ctx, id)
			_ = u.progress.Expire(ctx, id)
			removed++
		}
	}
	return removed
}

// removeTus removes a resumable upload's data and state.
func (u *uploadRoot) removeTus(ctx context.Context, id string) {
	_ = u.data.Remove(ctx, id)
	_ = u.states.Delete(ctx, id)
}

// sweepInterval is how often the sweeper looks for expired uploads.
func sweepInterval(expiry time.Duration) time.Duration {
	return min(max(expiry/4, time.Second), 10*time.Minute)
}

// setSweepInterval sets how often the sweeper runs, from the chunk_expiry
// of the handler provisioned last. The sweeper waits its new interval from
// now, not the rest of the old one (a reload that shortens chunk_expiry
// takes effect at once).
func (u *uploadRoot) setSweepInterval(expiry time.Duration) {
	u.sweepEvery.Store(int64(sweepInterval(expiry)))
	u.expiry.Store(int64(expiry))
	select {
	case u.resweep <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// staleSweeper is a storage that keeps what an interrupted write leaves
// behind (on S3: open multipart uploads, staging objects) and removes it
// once older than age.
type staleSweeper interface {
	SweepStale(ctx context.Context, age time.Duration, now time.Time) (int, error)
}

// sweepStale removes what writes older than chunk_expiry left behind in a
// storage that keeps it.
func (u *uploadRoot) sweepStale(now time.Time, logger *zap.Logger) {
	s, ok := u.stored.(staleSweeper)
	if !ok {
		return
	}
	n, err := s.SweepStale(context.Background(), time.Duration(u.expiry.Load()), now)
	if err != nil {
		logger.Warn("sweeping stale writes", zap.Error(err))
	}
	if n > 0 {
		logger.Info("removed stale writes", zap.Int("count", n))
	}
}

// runSweeper removes expired uploads until the upload root is closed: one
// sweeper per root, whatever the number of handlers and config reloads.
func (u *uploadRoot) runSweeper(logger *zap.Logger) {
	for {
		t := time.NewTimer(time.Duration(u.sweepEvery.Load()))
		select {
		case <-u.closed:
			t.Stop()
			return
		case <-u.resweep:
			t.Stop()
			continue
		case <-t.C:
		}
		if n := u.sweepTus(u.now()); n > 0 {
			logger.Info("removed expired resumable uploads", zap.Int("count", n))
		}
		u.sweepStale(u.now(), logger)
	}
}
