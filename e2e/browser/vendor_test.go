package browser_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
)

// TestVendoredTusClient checks that the demo page's tus client is the stock
// tus-js-client: demo/vendor/tus-js-client/tus.min.js is byte for byte the
// browser build of the version package.json pins (installed here by npm ci
// from the lockfile), and SHA256SUMS records the vendored files' sums.
func TestVendoredTusClient(t *testing.T) {
	requireTools(t)
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	if err := caddyrun.NPMInstall(here, "tus-js-client"); err != nil {
		t.Fatalf("installing tus-js-client: %v", err)
	}
	vendored := filepath.Join(here, "..", "..", "demo", "vendor", "tus-js-client")
	got, err := os.ReadFile(filepath.Join(vendored, "tus.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(here, "node_modules", "tus-js-client", "dist", "tus.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("demo/vendor/tus-js-client/tus.min.js (%d bytes) is not the npm package's dist/tus.min.js (%d bytes): run scripts/vendor-tus-js-client", len(got), len(want))
	}

	sums, err := os.Open(filepath.Join(vendored, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	checked := 0
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: malformed line %q", line)
		}
		b, err := os.ReadFile(filepath.Join(vendored, name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("%s: sha256 %x, SHA256SUMS says %s", name, h, sum)
		}
		checked++
	}
	if checked != 2 {
		t.Errorf("SHA256SUMS lists %d files, want 2 (tus.min.js, LICENSE)", checked)
	}
}
