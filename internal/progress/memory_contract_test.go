package progress_test

import (
	"sync"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress/progresstest"
)

// The registries of one subtest are one Memory, given out again: a process
// has one registry per upload root.
func TestMemoryContract(t *testing.T) {
	var mu sync.Mutex
	shared := map[string]*progress.Memory{}
	progresstest.Run(t, func(t *testing.T) progress.Registry {
		mu.Lock()
		defer mu.Unlock()
		if m := shared[t.Name()]; m != nil {
			return m
		}
		m := progress.NewMemory()
		shared[t.Name()] = m
		return m
	})
}
