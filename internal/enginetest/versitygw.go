package enginetest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// S3 is a running S3-compatible gateway of a test's own.
type S3 struct {
	// Endpoint is its URL, http://127.0.0.1:port (path-style addressing).
	Endpoint string
	// Region is the region to sign requests for.
	Region string
	// AccessKey and SecretKey are its root credentials.
	AccessKey, SecretKey string
}

// Versitygw starts a versitygw (posix backend, its data in the test's temp
// folder) of the test's own and returns where it listens and its root
// credentials. It has no bucket: the test creates the ones it needs.
//
// The binary is looked up in the engines cache folder that
// scripts/engines/install builds it into, then on PATH.
func Versitygw(t testing.TB) S3 {
	t.Helper()
	bin := versitygwBinary()
	if bin == "" {
		missing(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	dir := t.TempDir()
	var secret [12]byte
	rand.Read(secret[:])
	s3 := S3{Region: "us-east-1", AccessKey: "enginetest", SecretKey: hex.EncodeToString(secret[:])}
	var last error
	for range 5 { // a free port can be taken between the pick and the bind
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "--port", addr, "posix", dir)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s3.AccessKey, "ROOT_SECRET_KEY="+s3.SecretKey)
		if last = start(t, cmd, addr); last == nil {
			s3.Endpoint = "http://" + addr
			return s3
		}
	}
	t.Fatalf("starting versitygw: %v", last)
	return S3{}
}

// versitygwBinary finds versitygw where scripts/engines/install puts it
// ($ENGINES_CACHE, else $XDG_CACHE_HOME or ~/.cache, then
// caddy-reflex-upload/engines/bin), else on PATH; "" when nowhere.
func versitygwBinary() string {
	cache := os.Getenv("ENGINES_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			if home, err := os.UserHomeDir(); err == nil {
				base = filepath.Join(home, ".cache")
			}
		}
		if base != "" {
			cache = filepath.Join(base, "caddy-reflex-upload", "engines")
		}
	}
	if cache != "" {
		bin := filepath.Join(cache, "bin", "versitygw")
		if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return bin
		}
	}
	if bin, err := exec.LookPath("versitygw"); err == nil {
		return bin
	}
	return ""
}
