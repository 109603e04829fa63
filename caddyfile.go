package reflexupload

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("reflex_upload", parseCaddyfile)
	// Early in the route, so that a site with reflex_upload and a handle
	// block, reverse_proxy or file_server needs no order line: the handler
	// only acts under its prefix and passes everything else on.
	httpcaddyfile.RegisterDirectiveOrder("reflex_upload", httpcaddyfile.Before, "invoke")
}

// parseCaddyfile sets up the handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	reflex_upload [<matcher>] {
//		root             <dir>
//		prefix           <path>
//		max_size         <size>
//		min_size         <size>
//		max_files        <n>
//		max_request_size <size>
//		max_fields_size  <size>
//		accept           <mime|type/*|.ext>...
//		on_conflict      overwrite|rename|reject
//		fsync            on|off
//		hash             sha256|none
//		owner            <placeholder>
//		progress_retention <duration>
//		idle_timeout     <duration>
//		chunk_expiry     <duration>
//		mode             store|forward|track
//		forward_fail_status <code|class>...
//		cors_origins     <origin>...
//		cors_credentials
//		storage          local
//		state            memory
//	}
//
// Sizes take humanize units (MB = 10^6 bytes, MiB = 2^20 bytes). accept may
// be given several times; its values add up. Every other option may be given
// once.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] && opt != "accept" {
			return d.Errf("reflex_upload option '%s' is given twice", opt)
		}
		seen[opt] = true

		switch opt {
		case "root", "prefix", "on_conflict", "hash", "owner", "mode":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "root":
				h.Root = v
			case "prefix":
				h.Prefix = v
			case "owner":
				h.Owner = v
			case "mode":
				if v != modeStore && v != modeForward && v != modeTrack {
					return d.Errf("parsing mode: %q is not store, forward or track", v)
				}
				h.Mode = v
			case "on_conflict":
				if v != conflictOverwrite && v != conflictRename && v != conflictReject {
					return d.Errf("parsing on_conflict: %q is not overwrite, rename or reject", v)
				}
				h.OnConflict = v
			case "hash":
				if v != hashSHA256 && v != hashNone {
					return d.Errf("parsing hash: %q is not sha256 or none", v)
				}
				h.Hash = v
			}

		case "max_size", "min_size", "max_request_size", "max_fields_size":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(v)
			if err != nil {
				return d.Errf("parsing %s: %v", opt, err)
			}
			if size > 1<<62 {
				return d.Errf("parsing %s: %s is too large", opt, v)
			}
			switch opt {
			case "max_size":
				h.MaxSize = int64(size)
			case "min_size":
				h.MinSize = int64(size)
			case "max_request_size":
				h.MaxRequestSize = int64(size)
			case "max_fields_size":
				if size == 0 {
					return d.Errf("parsing max_fields_size: must be more than 0")
				}
				h.MaxFieldsSize = int64(size)
			}

		case "max_files":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("parsing max_files: %q is not a whole number", v)
			}
			h.MaxFiles = n

		case "accept":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if _, err := filecheck.ParseAccept(args); err != nil {
				return d.Errf("parsing accept: %v", err)
			}
			h.Accept = append(h.Accept, args...)

		case "progress_retention", "idle_timeout", "chunk_expiry":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("parsing %s: %q is not a positive duration", opt, v)
			}
			switch opt {
			case "progress_retention":
				h.ProgressRetention = caddy.Duration(dur)
			case "idle_timeout":
				h.IdleTimeout = caddy.Duration(dur)
			case "chunk_expiry":
				h.ChunkExpiry = caddy.Duration(dur)
			}

		case "forward_fail_status":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if _, err := parseStatusRanges(args); err != nil {
				return d.Errf("parsing forward_fail_status: %v", err)
			}
			h.ForwardFailStatus = args

		case "cors_origins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, o := range args {
				if err := checkOrigin(o); err != nil {
					return d.Errf("parsing cors_origins: %v", err)
				}
			}
			h.CORSOrigins = args

		case "storage", "state":
			raw, err := unmarshalBackend(d, opt)
			if err != nil {
				return err
			}
			if opt == "storage" {
				h.StorageRaw = raw
			} else {
				h.StateRaw = raw
			}

		case "cors_credentials":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.CORSCredentials = true

		case "fsync":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch v {
			case "on":
				h.Fsync = nil
			case "off":
				h.Fsync = new(bool)
			default:
				return d.Errf("parsing fsync: %q is not on or off", v)
			}

		default:
			return d.Errf("unrecognized reflex_upload option '%s'", opt)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
