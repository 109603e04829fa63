// Package browser_test runs the demo site of Caddyfile.example in a real
// browser: it builds Caddy with the module (./cmd/caddy), starts it from the
// repository root exactly as the README says (caddy run --config
// Caddyfile.example, port 8080) with REFLEX_UPLOADED_FILES_DIR set to a
// temp folder, and drives Debian's Chromium (/usr/bin/chromium) through the
// page with playwright-core from scenario.mjs beside this file. The files
// the page stored are then checked on disk. See README.md.
package browser_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	// chromiumPath is Debian's Chromium; the tests never download a browser.
	chromiumPath = "/usr/bin/chromium"
	// sitePort is the port of Caddyfile.example.
	sitePort = "8080"
	// testTimeout bounds each test: Caddy, the browser and every wait.
	testTimeout = 4 * time.Minute
	// scenarioTimeout bounds one run of scenario.mjs (it stops itself a
	// little earlier, to report what the page showed).
	scenarioTimeout = 3 * time.Minute
	// missingTools is the message when the browser or node is not installed.
	missingTools = "install chromium (apt-get install chromium) and node to run the browser tests"
)

var docs = flag.Bool("docs", false, "copy the screenshots to docs/screenshot.png and docs/screenshot-phone.png")

var (
	npmOnce sync.Once
	npmErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// TestSelectFiles picks files with the keyboard (Tab to the drop zone,
// Enter, the file chooser) and a folder with the folder input: each file
// is listed done with a full progress bar, stored byte for byte under the
// name it was sent with (folders kept), images get thumbnails, and the list
// of stored files survives a reload.
func TestSelectFiles(t *testing.T) {
	s := setup(t)
	src := t.TempDir()
	files := map[string][]byte{
		"photo.png": pngImage(320, 200, 0),
		"notes.txt": []byte("Notes from the browser test.\nSecond line.\n"),
		"data.bin":  randomBytes(3*mib+17, 1),
		// A name that is markup: the page must show it as text.
		`<img src=x onerror=alert(1)>.txt`: []byte("not markup\n"),
	}
	folder := map[string][]byte{
		"album/cover.png":      pngImage(200, 200, 1),
		"album/deep/readme.md": []byte("# In a folder\n"),
	}
	var picked []string
	for name, b := range files {
		picked = append(picked, writeFile(t, src, name, b))
	}
	for name, b := range folder {
		writeFile(t, src, name, b)
	}
	var expect []string
	for name := range files {
		expect = append(expect, name)
	}
	for name := range folder {
		expect = append(expect, name)
	}

	var res struct {
		FirstFocus string `json:"firstFocus"`
		FocusRing  string `json:"focusOutline"`
		Items      []shownUpload
		Overall    struct{ Value, Max float64 }
		Announcer  string
		Injected   int `json:"scriptInjected"`
		Thumbnails []struct {
			Src           string
			Width, Height int
		}
		StoredAfter []string `json:"storedAfterReload"`
		PageErrors  []string
		Dialogs     []string
	}
	dropped := map[string]string{"name": "dropped.txt", "text": "dropped on the drop zone\n"}
	expect = append(expect, dropped["name"])
	s.run(t, "select", map[string]any{"files": picked, "folder": filepath.Join(src, "album"), "dropped": dropped, "expect": expect}, &res)

	if res.FirstFocus != "dropzone" {
		t.Errorf("the first Tab stop is #%s, want the drop zone", res.FirstFocus)
	}
	if res.FocusRing == "" || res.FocusRing == "none" {
		t.Errorf("the focused drop zone shows no focus ring (box-shadow %q)", res.FocusRing)
	}
	all := map[string][]byte{}
	for n, b := range files {
		all[n] = b
	}
	for n, b := range folder {
		all[n] = b
	}
	all[dropped["name"]] = []byte(dropped["text"])
	for _, it := range res.Items {
		want, ok := all[it.Name]
		if !ok {
			t.Errorf("the page lists an upload named %q, not one that was picked", it.Name)
			continue
		}
		if it.State != "done" {
			t.Errorf("%s: state %q (%s %s), want done", it.Name, it.State, it.StateText, it.Detail)
			continue
		}
		if it.Value != it.Max || it.Max != math.Max(float64(len(want)), 1) {
			t.Errorf("%s: progress %v of %v, want %d of %d", it.Name, it.Value, it.Max, len(want), len(want))
		}
		if it.Label != it.Name {
			t.Errorf("%s: the progress bar is labelled %q, want the file name", it.Name, it.Label)
		}
		if it.StoredPath != it.Name {
			t.Errorf("%s: stored as %q, want the name it was sent with", it.Name, it.StoredPath)
		}
		s.assertStored(t, it.Name, want)
	}
	if len(res.Items) != len(all) {
		t.Errorf("the page shows %d uploads, want %d", len(res.Items), len(all))
	}
	if res.Overall.Max <= 1 || res.Overall.Value != res.Overall.Max {
		t.Errorf("overall progress %v of %v, want complete", res.Overall.Value, res.Overall.Max)
	}
	if res.Injected != 0 || len(res.Dialogs) != 0 {
		t.Errorf("a file name was put into the page as markup: %d elements, dialogs %q", res.Injected, res.Dialogs)
	}
	if len(res.Thumbnails) != 2 {
		t.Errorf("%d thumbnails, want 2 (photo.png and album/cover.png): %+v", len(res.Thumbnails), res.Thumbnails)
	}
	for _, th := range res.Thumbnails {
		if th.Width == 0 || th.Height == 0 {
			t.Errorf("thumbnail %s did not load (%dx%d)", th.Src, th.Width, th.Height)
		}
	}
	if len(res.StoredAfter) != len(all) {
		t.Errorf("after a reload the page lists %d stored files, want %d: %q", len(res.StoredAfter), len(all), res.StoredAfter)
	}
	if len(res.PageErrors) != 0 {
		t.Errorf("script errors on the page: %q", res.PageErrors)
	}
	s.assertNoTemp(t)
}

// TestRejectedFile uploads a file whose name the server refuses (".uploads",
// its private folder), first as a standard upload and then as a resumable
// one: the page shows the code from the server's JSON error.
func TestRejectedFile(t *testing.T) {
	s := setup(t)
	const name = ".uploads"
	// What the server itself says to such an upload (no browser).
	status, body := s.postFile(t, name, []byte("refused\n"))
	if status != http.StatusBadRequest || body.Code != "invalid-filename" {
		t.Fatalf("the server answers %d %+v to a file named %q, want 400 invalid-filename", status, body, name)
	}

	var res struct {
		Standard, Tus shownUpload
		Answers       []int
		Announcer     string
		PageErrors    []string
	}
	s.run(t, "reject", map[string]any{"name": name}, &res)
	for _, it := range []shownUpload{res.Standard, res.Tus} {
		if it.State != "error" || it.Code != "invalid-filename" {
			t.Errorf("%s upload: state %q, code %q (%s), want error invalid-filename", it.Badge, it.State, it.Code, it.Detail)
		}
		if !strings.Contains(it.Detail, body.Detail) {
			t.Errorf("%s upload: the page shows %q, want the server's detail %q", it.Badge, it.Detail, body.Detail)
		}
	}
	if res.Standard.Badge != "standard" || res.Tus.Badge != "resumable" {
		t.Errorf("sent as %q and %q, want standard then resumable", res.Standard.Badge, res.Tus.Badge)
	}
	if len(res.Answers) != 2 || res.Answers[0] != 400 || res.Answers[1] != 400 {
		t.Errorf("the server answered %v to the page's uploads, want [400 400]", res.Answers)
	}
	if !strings.Contains(res.Announcer, "invalid-filename") {
		t.Errorf("the live region says %q, want the refusal", res.Announcer)
	}
	s.assertEmpty(t)
}

// TestCancel throttles the browser's uploads (DevTools network emulation,
// 256 KiB/s), starts an upload of 20 MiB and cancels it mid-way with its
// button (by keyboard): the page sends DELETE and shows "cancelled", the
// server's progress says cancelled, and nothing is left on disk. Both kinds:
// a standard upload (the DELETE stops its request) and a resumable one (the
// DELETE is tus termination, of the id in the upload URL).
func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tus   bool
		badge string
	}{
		{"standard", false, "standard"},
		{"resumable", true, "resumable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := setup(t)
			src := t.TempDir()
			file := writeFile(t, src, "big-cancel.bin", randomBytes(20*mib, 3))

			var res struct {
				Before, After shownUpload
				DeleteStatus  int
				UploadID      string `json:"uploadID"`
				UploadURL     string `json:"uploadURL"`
				Announcer     string
				PageErrors    []string
			}
			s.run(t, "cancel", map[string]any{"file": file, "rate": 256 * kib, "minSent": 256 * kib, "tus": tc.tus}, &res)
			t.Logf("before the cancel: %s %s", res.Before.StateText, res.Before.Detail)
			t.Logf("after the cancel: %s %s", res.After.StateText, res.After.Detail)
			if res.Before.Badge != tc.badge {
				t.Errorf("sent as %q, want %s", res.Before.Badge, tc.badge)
			}
			if res.DeleteStatus != http.StatusNoContent {
				t.Errorf("DELETE answered %d, want 204", res.DeleteStatus)
			}
			if res.After.State != "cancelled" || res.After.StateText != "cancelled" {
				t.Errorf("after the cancel the page shows %q (%s), want cancelled", res.After.StateText, res.After.Detail)
			}
			if !strings.Contains(res.After.Detail, "the server says cancelled") {
				t.Errorf("the page does not show the server's final state: %q", res.After.Detail)
			}
			if res.Before.Value <= 0 || res.Before.Value >= 20*mib {
				t.Errorf("cancelled at %v bytes sent: not mid-way", res.Before.Value)
			}
			if !strings.Contains(res.Announcer, "cancelled") {
				t.Errorf("the live region says %q, want the cancel", res.Announcer)
			}
			// The server's own record of the upload.
			id := res.UploadID
			if tc.tus {
				id = res.UploadURL[strings.LastIndex(res.UploadURL, "/")+1:]
			}
			p := s.progress(t, id)
			if p.State != "cancelled" || p.Code != "upload-cancelled" {
				t.Errorf("progress of %s: %+v, want state cancelled, code upload-cancelled", id, p)
			}
			s.assertEmpty(t)
		})
	}
}

// TestResumable uploads 24 MiB with the "Resumable (tus)" switch on, in
// 8 MiB chunks; the page is reloaded after the first chunk and the same
// file added again: the upload resumes from the server's offset (HEAD, then
// PATCH) and the stored file is byte-identical.
func TestResumable(t *testing.T) {
	s := setup(t)
	src := t.TempDir()
	content := randomBytes(24*mib, 4)
	file := writeFile(t, src, "big-resumable.bin", content)

	var res struct {
		SwitchOn                    bool
		Badge                       string
		OffsetBeforeReload          int64
		Unfinished                  string
		Done                        shownUpload
		Creations                   int
		HeadsAfterReload            int
		FirstPatchOffsetAfterReload int64
		PatchesAfterReload          int
		UploadURL                   string `json:"uploadURL"`
		StockClient                 bool
		PageErrors                  []string
	}
	s.run(t, "tus", map[string]any{"file": file, "rate": 6 * mib}, &res)
	if !res.StockClient {
		t.Errorf("the page did not load the vendored tus-js-client (window.tus.Upload)")
	}
	t.Logf("first chunk stored at offset %d; after the reload: %d HEAD, %d PATCH from offset %d; %s",
		res.OffsetBeforeReload, res.HeadsAfterReload, res.PatchesAfterReload, res.FirstPatchOffsetAfterReload, res.Done.Detail)
	if !res.SwitchOn || res.Badge != "resumable" {
		t.Errorf("switch on %v, upload sent as %q: want a resumable upload", res.SwitchOn, res.Badge)
	}
	if res.Done.State != "done" {
		t.Fatalf("the upload ended %q: %s", res.Done.StateText, res.Done.Detail)
	}
	if res.Done.StoredPath != "big-resumable.bin" {
		t.Errorf("stored as %q, want big-resumable.bin (one upload, resumed)", res.Done.StoredPath)
	}
	if res.Creations != 1 {
		t.Errorf("the page created %d uploads, want 1: it started over instead of resuming", res.Creations)
	}
	if res.HeadsAfterReload < 1 || res.FirstPatchOffsetAfterReload < res.OffsetBeforeReload || res.FirstPatchOffsetAfterReload == 0 {
		t.Errorf("after the reload: %d HEAD, first PATCH at offset %d (the server had %d): not resumed",
			res.HeadsAfterReload, res.FirstPatchOffsetAfterReload, res.OffsetBeforeReload)
	}
	if !strings.Contains(res.Unfinished, "big-resumable.bin") {
		t.Errorf("after the reload the page does not mention the unfinished upload: %q", res.Unfinished)
	}
	if !strings.Contains(res.Done.Detail, "stored as") {
		t.Errorf("done, but the page shows %q", res.Done.Detail)
	}
	s.assertStored(t, "big-resumable.bin", content)
	// The server's progress says done, with the stored file.
	id := res.UploadURL[strings.LastIndex(res.UploadURL, "/")+1:]
	if p := s.progress(t, id); p.State != "done" || len(p.Files) != 1 || p.Files[0].Size != int64(len(content)) {
		t.Errorf("progress of the tus upload %s: %+v, want done with the file", id, p)
	}
}

// TestScreenshots takes screenshots of the page in use at 1280x800 and at
// 390x844 (a phone), into a temp folder; with -docs they are copied to
// docs/screenshot.png and docs/screenshot-phone.png for the README.
func TestScreenshots(t *testing.T) {
	s := setup(t)
	src := t.TempDir()
	var picked []string
	for i, name := range []string{"harbour.png", "meadow.png", "sunset.png", "glacier.png"} {
		picked = append(picked, writeFile(t, src, name, pngImage(480, 320, i+10)))
	}
	picked = append(picked, writeFile(t, src, "report.pdf", minimalPDF()))
	picked = append(picked, writeFile(t, src, "notes.md", []byte("# Notes\n\nUploaded from the demo page.\n")))
	later := []string{writeFile(t, src, "team-photo.png", pngImage(480, 320, 14))}
	big := writeFile(t, src, "holiday-video.mp4", randomBytes(16*mib, 5))
	out := t.TempDir()

	var res struct {
		Desktop, Phone string
		PhoneOverflow  int
		PageErrors     []string
	}
	s.run(t, "screenshots", map[string]any{"files": picked, "later": later, "big": big, "rate": 2 * mib, "minSent": 5 * mib, "out": out}, &res)
	for _, p := range []string{res.Desktop, res.Phone} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		w, h := pngSize(t, p)
		t.Logf("screenshot %s: %dx%d, %d KiB", p, w, h, info.Size()/kib)
	}
	if w, h := pngSize(t, res.Desktop); w != 1280 || h != 800 {
		t.Errorf("desktop screenshot is %dx%d, want 1280x800", w, h)
	}
	if w, h := pngSize(t, res.Phone); w != 390 || h != 844 {
		t.Errorf("phone screenshot is %dx%d, want 390x844", w, h)
	}
	if res.PhoneOverflow > 0 {
		t.Errorf("at 390 px wide the page scrolls sideways by %d px", res.PhoneOverflow)
	}
	if len(res.PageErrors) != 0 {
		t.Errorf("script errors on the page: %q", res.PageErrors)
	}
	if *docs {
		root, err := caddyrun.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		for from, to := range map[string]string{res.Desktop: "docs/screenshot.png", res.Phone: "docs/screenshot-phone.png"} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, to), b, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("copied to %s", to)
		}
	}
}

// shownUpload is what the page shows for one upload.
type shownUpload struct {
	Name       string
	State      string // data-state: queued, uploading, cancelling, done, error, cancelled
	StateText  string
	Detail     string
	Code       string
	Badge      string
	Value, Max float64
	Label      string
	StoredPath string
	URL        string `json:"url"`
}

// site is one test's Caddy running Caddyfile.example.
type site struct {
	ctx   context.Context
	dir   string // REFLEX_UPLOADED_FILES_DIR
	base  string // http://localhost:8080/
	caddy *caddyrun.Server
	here  string // this folder (scenario.mjs, node_modules)
}

// setup checks for the tools, installs playwright-core, builds Caddy and
// starts it with Caddyfile.example.
func setup(t *testing.T) *site {
	t.Helper()
	requireTools(t)
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	npmOnce.Do(func() { npmErr = caddyrun.NPMInstall(here, "playwright-core") })
	if npmErr != nil {
		t.Fatalf("installing playwright-core: %v", npmErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	caddyBin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}
	root, err := caddyrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dir := filepath.Join(base, "uploaded_files")
	// Port 8080 is fixed by Caddyfile.example: it must be free.
	l, err := net.Listen("tcp", ":"+sitePort)
	if err != nil {
		t.Fatalf("port %s, which Caddyfile.example listens on, is in use (a demo server left running?): %v", sitePort, err)
	}
	l.Close()
	home := filepath.Join(base, "home")
	config := supervisor.Config{
		Name: "Caddy",
		Argv: []string{caddyBin, "run", "--config", "Caddyfile.example"},
		Dir:  root,
		Env: append(os.Environ(),
			"REFLEX_UPLOADED_FILES_DIR="+dir,
			// The example keeps Caddy's admin endpoint; move it off the
			// default port so that another Caddy on this machine is no bother.
			"CADDY_ADMIN="+caddyrun.FreeAddr(t),
			"HOME="+home,
			"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
			"XDG_DATA_HOME="+filepath.Join(home, "data"),
		),
		Log: filepath.Join(base, "caddy.log"),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("files under %s:\n%s", dir, caddyrun.ListFiles(dir))
		}
	})
	// Ready when it serves the demo page.
	c := caddyrun.Serve(t, ctx, config, func(ctx context.Context, p *supervisor.Process) error {
		return p.WaitUntil(ctx, "the demo page on port "+sitePort, func() bool {
			resp, err := http.Get("http://localhost:" + sitePort + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	})
	return &site{ctx: ctx, dir: dir, base: "http://localhost:" + sitePort + "/", caddy: c, here: here}
}

// requireTools skips the test when Chromium or node is missing, and fails
// it in CI.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	if info, err := os.Stat(chromiumPath); err != nil || info.IsDir() {
		missing = append(missing, chromiumPath)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		if major, err := nodeMajor(); err != nil || major < 20 {
			missing = append(missing, fmt.Sprintf("node 20 or newer (playwright-core needs it; found %d, %v)", major, err))
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: %s", strings.Join(missing, ", "), missingTools)
	}
	t.Skip(missingTools)
}

// nodeMajor answers the major version of node.
func nodeMajor() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", "--version").Output()
	if err != nil {
		return 0, err
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	return strconv.Atoi(major)
}

// run runs one scenario of scenario.mjs and decodes its findings into res.
// The browser's console and the page's requests are logged on failure.
func (s *site) run(t *testing.T, scenario string, args map[string]any, res any) {
	t.Helper()
	out := t.TempDir()
	if v, ok := args["out"]; ok {
		out = v.(string)
	}
	all := map[string]any{
		"scenario":  scenario,
		"base":      s.base,
		"out":       out,
		"chromium":  chromiumPath,
		"timeoutMs": (scenarioTimeout - 10*time.Second).Milliseconds(),
	}
	for k, v := range args {
		all[k] = v
	}
	spec, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, scenarioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(s.here, "scenario.mjs"), string(spec))
	cmd.Dir = s.here
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("scenario %s ran in %v", scenario, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node scenario.mjs %s\nbrowser console and requests:\n%s", scenario, caddyrun.Tail(stderr.String(), 16000))
		}
	})
	var head struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	line := lastLine(stdout.String())
	if err := json.Unmarshal([]byte(line), &head); err != nil {
		t.Fatalf("scenario %s (%v) printed no result line: %q", scenario, runErr, caddyrun.Tail(stdout.String(), 2000))
	}
	if !head.OK {
		t.Fatalf("scenario %s failed (%v): %s", scenario, runErr, head.Error)
	}
	if runErr != nil {
		t.Fatalf("scenario %s reported success but exited with %v", scenario, runErr)
	}
	if err := json.Unmarshal([]byte(line), res); err != nil {
		t.Fatalf("scenario %s: %v in %s", scenario, err, line)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// errorBody is the server's JSON error.
type errorBody struct {
	Detail, Code, File string
}

// postFile makes a standard upload of one file without a browser.
func (s *site) postFile(t *testing.T, name string, content []byte) (int, errorBody) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	part, err := mw.CreateFormFile("files", name)
	if err != nil {
		t.Fatal(err)
	}
	part.Write(content)
	mw.Close()
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.base+"_upload", &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body errorBody
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &body)
	t.Logf("POST /_upload with a file named %q: %d %s", name, resp.StatusCode, bytes.TrimSpace(b))
	return resp.StatusCode, body
}

// progressBody is the server's progress JSON.
type progressBody struct {
	State    string
	Code     string
	Received int64
	Files    []struct {
		Path string
		Size int64
	}
}

// progress reads an upload's progress from the server.
func (s *site) progress(t *testing.T, id string) progressBody {
	t.Helper()
	if id == "" {
		t.Fatalf("no upload id")
	}
	resp, err := http.Get(s.base + "_upload/.uploads/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	t.Logf("GET /_upload/.uploads/%s: %d %s", id, resp.StatusCode, bytes.TrimSpace(b))
	var p progressBody
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("progress of %s: %v", id, err)
	}
	return p
}

// assertStored checks that name is stored with exactly content.
func (s *site) assertStored(t *testing.T, name string, content []byte) {
	t.Helper()
	got, n, err := caddyrun.FileSHA256(filepath.Join(s.dir, filepath.FromSlash(name)))
	want := sha256.Sum256(content)
	switch {
	case err != nil:
		t.Errorf("%s is not stored: %v", name, err)
	case n != int64(len(content)) || got != hex.EncodeToString(want[:]):
		t.Errorf("%s: stored %d bytes with sha256 %s; sent %d bytes with sha256 %x", name, n, got, len(content), want)
	}
}

// assertEmpty checks that nothing is stored: no file anywhere under the
// upload folder (its private .uploads folder may hold empty folders only).
// The server removes temp files as a refused or cancelled upload ends,
// which can be a moment after the page has shown the end: it waits up to
// 5 s for them to go.
func (s *site) assertEmpty(t *testing.T) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for first := true; ; first = false {
		files := regularFiles(s.dir)
		if len(files) == 0 {
			if !first {
				t.Logf("the upload folder emptied %v after the page showed the end", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("files left under the upload folder:\n%s", caddyrun.ListFiles(s.dir))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertNoTemp checks that the private folder holds no temp file.
func (s *site) assertNoTemp(t *testing.T) {
	t.Helper()
	if files := regularFiles(filepath.Join(s.dir, ".uploads")); len(files) != 0 {
		t.Errorf("temp files left in .uploads: %q", files)
	}
}

func regularFiles(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// writeFile writes content to dir/name (making folders) and answers its path.
func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// randomBytes answers n pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(time.Now().UnixNano())
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// pngImage draws a small landscape-like picture: a sky gradient, a sun and
// hills, in colours picked by seed.
func pngImage(w, h, seed int) []byte {
	palettes := [][3]color.RGBA{
		{{86, 145, 230, 255}, {255, 214, 102, 255}, {46, 125, 80, 255}},
		{{240, 128, 96, 255}, {255, 240, 180, 255}, {90, 60, 120, 255}},
		{{120, 200, 235, 255}, {255, 255, 255, 255}, {70, 150, 170, 255}},
		{{250, 170, 80, 255}, {255, 90, 60, 255}, {60, 40, 70, 255}},
		{{180, 220, 250, 255}, {240, 250, 255, 255}, {110, 160, 200, 255}},
	}
	p := palettes[seed%len(palettes)]
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	sunX, sunY, sunR := float64(w)*(0.25+0.5*float64(seed%3)/2), float64(h)*0.35, float64(h)*0.12
	for y := range h {
		fy := float64(y) / float64(h)
		for x := range w {
			fx := float64(x) / float64(w)
			c := color.RGBA{
				uint8(float64(p[0].R) * (1 - 0.35*fy)),
				uint8(float64(p[0].G) * (1 - 0.25*fy)),
				uint8(math.Min(255, float64(p[0].B)*(1-0.1*fy)+20*fy)),
				255,
			}
			if math.Hypot(float64(x)-sunX, float64(y)-sunY) < sunR {
				c = p[1]
			}
			hill := 0.62 + 0.08*math.Sin(fx*6.3+float64(seed)) + 0.04*math.Sin(fx*17+float64(seed)*2)
			if fy > hill {
				shade := 1 - 0.4*(fy-hill)
				c = color.RGBA{uint8(float64(p[2].R) * shade), uint8(float64(p[2].G) * shade), uint8(float64(p[2].B) * shade), 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// minimalPDF answers a one-page PDF.
func minimalPDF() []byte {
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offsets := []int{}
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		"<< /Length 44 >>\nstream\nBT /F1 18 Tf 40 70 Td (Quarterly report) Tj ET\nendstream",
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	for i, o := range objs {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

func pngSize(t *testing.T, path string) (int, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg.Width, cfg.Height
}
