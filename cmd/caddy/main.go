// Command caddy is Caddy with its standard modules plus reflex_upload.
//
// It is the quickest way to run the module from a checkout:
//
//	go run ./cmd/caddy run --config Caddyfile.example
//
// To build the module into any other Caddy, use xcaddy:
//
//	xcaddy build --with github.com/reflexupload/caddy-reflex-upload=.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/reflexupload/caddy-reflex-upload"
)

func main() {
	caddycmd.Main()
}
