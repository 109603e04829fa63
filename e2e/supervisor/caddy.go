package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Caddy writes caddyfile to dir/Caddyfile and returns the Config that runs
// bin on it (`caddy run --config FILE --adapter caddyfile`) in dir, with
// HOME and Caddy's XDG data and config folders under dir/home (so Caddy's
// internal CA is in dir/home/data/caddy/pki) and its log in dir/caddy.log.
func Caddy(bin, dir, caddyfile string) (Config, error) {
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		return Config{}, err
	}
	home := filepath.Join(dir, "home")
	return Config{
		Name: "Caddy",
		Argv: []string{bin, "run", "--config", path, "--adapter", "caddyfile"},
		Env: append(os.Environ(),
			"HOME="+home,
			"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
			"XDG_DATA_HOME="+filepath.Join(home, "data"),
		),
		Dir: dir,
		Log: filepath.Join(dir, "caddy.log"),
	}, nil
}

// UploadSite returns a Caddyfile with one site, http://addr, whose
// reflex_upload stores into root with the given options (one a line).
// The global options are admin off (unless global sets admin), auto_https
// off and persist_config off, then global.
func UploadSite(addr, root string, global, upload []string) string {
	var b strings.Builder
	b.WriteString("{\n")
	admin := false
	for _, l := range global {
		admin = admin || strings.HasPrefix(l, "admin ")
	}
	if !admin {
		b.WriteString("\tadmin off\n")
	}
	b.WriteString("\tauto_https off\n\tpersist_config off\n")
	for _, l := range global {
		b.WriteString("\t" + l + "\n")
	}
	fmt.Fprintf(&b, "}\n\nhttp://%s {\n\treflex_upload {\n\t\troot %q\n", addr, root)
	for _, l := range upload {
		b.WriteString("\t\t" + l + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
