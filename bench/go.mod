module github.com/reflexupload/caddy-reflex-upload/bench

go 1.26.8

require (
	github.com/reflexupload/caddy-reflex-upload v0.0.0
	github.com/tus/tusd/v2 v2.9.1
)

require golang.org/x/exp v0.0.0-20260908205506-85c1c2202aba // indirect

// The benchmarks use the supervisor of this checkout's e2e tests.
replace github.com/reflexupload/caddy-reflex-upload => ../
