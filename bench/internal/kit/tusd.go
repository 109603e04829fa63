package kit

import (
	"expvar"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"

	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// TusdBasePath is where tusd serves uploads.
const TusdBasePath = "/files/"

// tusdFlag is the hidden first argument with which a benchmark re-executes
// itself as tusd.
const tusdFlag = "-serve-tusd"

// TusdConfig returns the Config that runs this program (self) as tusd,
// storing into dir and listening on addr, its log in logDir/tusd.log.
func TusdConfig(self, dir, logDir, addr string) supervisor.Config {
	return supervisor.Config{
		Name: "tusd",
		Argv: []string{self, tusdFlag, dir, addr},
		Dir:  logDir,
		Log:  filepath.Join(logDir, "tusd.log"),
	}
}

// ServeTusdChild serves tusd and exits if this process was started by
// TusdConfig; otherwise it returns at once. Call it first in main.
func ServeTusdChild() {
	if len(os.Args) != 4 || os.Args[1] != tusdFlag {
		return
	}
	if err := serveTusd(os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "serve-tusd:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveTusd serves tusd v2 as its docs show it (pkg/handler with
// pkg/filestore and pkg/memorylocker, default config) into dir on addr,
// and Go's memory accounting at /debug/vars (expvar).
func serveTusd(dir, addr string) error {
	store := filestore.New(dir)
	composer := tusd.NewStoreComposer()
	store.UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := tusd.NewHandler(tusd.Config{BasePath: TusdBasePath, StoreComposer: composer})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(TusdBasePath, http.StripPrefix(TusdBasePath, h))
	mux.Handle(strings.TrimSuffix(TusdBasePath, "/"), http.StripPrefix(strings.TrimSuffix(TusdBasePath, "/"), h))
	mux.Handle("/debug/vars", expvar.Handler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}
