package kit

import (
	"flag"
	"fmt"
	"time"
)

// Options are the flags that the single-upload benchmarks (upload, tus)
// share.
type Options struct {
	Caddy         string // the Caddy binary, absolute; "" with OnlyBaselines
	Size          int64  // bytes per upload
	Rounds        int
	KeepTmp       bool
	OnlyBaselines bool
	Timeout       time.Duration // per upload

	size Size
}

// Flags registers the shared flags; baselines names the servers that
// -only-baselines keeps.
func (o *Options) Flags(baselines string) {
	o.size = Size(1 << 30)
	flag.StringVar(&o.Caddy, "caddy", "", "path to the Caddy binary built with reflex_upload (required unless -only-baselines)")
	flag.Var(&o.size, "size", "bytes of file content per upload (e.g. 1073741824, 256MiB)")
	flag.IntVar(&o.Rounds, "rounds", 5, "number of rounds (each round uploads once to every target)")
	flag.BoolVar(&o.KeepTmp, "keep-tmp", false, "keep the temp dir (Caddyfiles, server logs) for debugging")
	flag.BoolVar(&o.OnlyBaselines, "only-baselines", false, "benchmark only "+baselines+" (no Caddy)")
	flag.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "timeout per upload")
}

// Parse parses the command line and checks it (exiting 2 when it is
// wrong); it makes -caddy absolute.
func (o *Options) Parse() {
	flag.Parse()
	o.Size = int64(o.size)
	if flag.NArg() > 0 {
		Usage(fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	if o.Caddy == "" && !o.OnlyBaselines {
		flag.Usage()
		Usage("-caddy is required (or use -only-baselines)")
	}
	if o.Rounds < 1 {
		Usage("-rounds must be >= 1")
	}
	if o.Caddy != "" {
		abs, err := AbsFile("-caddy", o.Caddy)
		if err != nil {
			Usage(err.Error())
		}
		o.Caddy = abs
	}
}
