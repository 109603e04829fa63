package kit

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// StartServer starts cfg as a child process, stops it at exit, and waits
// (up to wait) until addr accepts connections.
func StartServer(cfg supervisor.Config, addr string, wait time.Duration) (*supervisor.Process, error) {
	p, err := supervisor.Start(cfg)
	if err != nil {
		return nil, err
	}
	AtCleanup(func() { p.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.WaitTCP(ctx, addr); err != nil {
		return nil, err
	}
	return p, nil
}

// CaddyConfig writes, into dir, a Caddyfile for one site on addr whose
// reflex_upload stores into root with the options upload (see
// supervisor.UploadSite), and returns the Config that runs bin on it under
// the name name.
func CaddyConfig(name, bin, dir, addr, root string, global, upload []string) (supervisor.Config, error) {
	cfg, err := supervisor.Caddy(bin, dir, supervisor.UploadSite(addr, root, global, upload))
	cfg.Name = name
	return cfg, err
}

// StartIn starts a measured server (StartMeasured) in base: it makes
// base/slug, where the server stores, and base/slug-config, for its
// configuration and log, picks a free port, and has config describe the
// server. It returns the server and its store.
func StartIn(base, slug string, config func(store, dir, addr string) (supervisor.Config, error)) (*Measured, string, error) {
	store, err := Mkdir(base, slug)
	if err != nil {
		return nil, "", err
	}
	dir, err := Mkdir(base, slug+"-config")
	if err != nil {
		return nil, "", err
	}
	addr, err := supervisor.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	cfg, err := config(store, dir, addr)
	if err != nil {
		return nil, "", err
	}
	p, err := StartMeasured(cfg, addr)
	return p, store, err
}

// StartCaddyIn is StartIn for Caddy (bin) with reflex_upload { root STORE;
// options }.
func StartCaddyIn(base, slug, bin string, options []string) (*Measured, string, error) {
	return StartIn(base, slug, func(store, dir, addr string) (supervisor.Config, error) {
		return CaddyConfig(slug, bin, dir, addr, store, nil, options)
	})
}

// Measured is a server whose peak memory growth is measured per upload:
// VmHWM after the upload minus VmRSS before it, VmHWM being reset before
// it through /proc/PID/clear_refs; where that is not allowed, VmHWM minus
// VmRSS at start.
type Measured struct {
	*supervisor.Process
	Addr        string
	ClearRefsOK bool
	rssAtStart  int64
	noted       bool
}

// StartMeasured starts cfg as StartServer does (30 s to listen) and
// prepares the memory accounting.
func StartMeasured(cfg supervisor.Config, addr string) (*Measured, error) {
	p, err := StartServer(cfg, addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	m := &Measured{Process: p, Addr: addr}
	if m.rssAtStart, err = p.RSS(); err != nil {
		return nil, err
	}
	m.ClearRefsOK = p.ResetPeak() == nil
	fmt.Printf("  started %s pid %d on %s, RSS %.1f MiB\n", p.Name(), p.PID(), addr, float64(m.rssAtStart)/MiB)
	return m, nil
}

// BeforeUpload resets VmHWM (if it can) and returns the baseline (bytes)
// against which Growth compares VmHWM after the upload.
func (m *Measured) BeforeUpload() (int64, error) {
	path := fmt.Sprintf("/proc/%d/clear_refs", m.PID())
	if m.ClearRefsOK {
		if err := m.ResetPeak(); err != nil {
			m.ClearRefsOK = false
			fmt.Printf("  NOTE: cannot write %s (%v); reporting VmHWM - VmRSS-at-start instead\n", path, err)
		}
	} else if !m.noted {
		fmt.Printf("  NOTE: cannot write %s; reporting VmHWM - VmRSS-at-start instead\n", path)
	}
	m.noted = true
	if !m.ClearRefsOK {
		return m.rssAtStart, nil
	}
	return m.RSS()
}

// Growth returns VmHWM minus before (from BeforeUpload), in bytes.
func (m *Measured) Growth(before int64) (int64, error) {
	hwm, err := m.Status("VmHWM")
	return hwm - before, err
}

// PeakKind says how the peak memory growth was measured.
func (m *Measured) PeakKind() string {
	if m.ClearRefsOK {
		return "VmHWM - VmRSS before upload, VmHWM reset via clear_refs"
	}
	return "VmHWM - VmRSS at start: clear_refs not writable"
}

// Self is this program's path, for children that re-execute it.
func Self() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating this binary for re-exec: %w", err)
	}
	return self, nil
}
