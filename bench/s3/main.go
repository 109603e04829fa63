// Command s3 benchmarks one large upload into an S3 bucket (versitygw,
// started by scripts/engines/start for the run) through Caddy with
// reflex_upload (`storage s3`), against a plain PutObject of the same file
// with aws-sdk-go-v2 (the limit) and against tusd v2 with its s3store (one
// tus PATCH), also as one tus PATCH to Caddy. See bench/README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	"github.com/tus/tusd/v2/pkg/s3store"

	"github.com/reflexupload/caddy-reflex-upload/bench/internal/kit"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
	bucket   = "bench"
	fileName = "bench.bin"
	tusdFlag = "-serve-tusd-s3"
)

type options struct {
	caddy   string
	engines string
	size    int64
	rounds  int
	keepTmp bool
	timeout time.Duration
}

// target is one way of getting the file into the bucket.
type target struct {
	name   string
	prefix string // key prefix of its objects in the bucket
	upload func(ctx context.Context) error
	secs   []float64
}

func main() {
	serveTusdChild()
	var o options
	size := kit.Size(1 << 30)
	flag.StringVar(&o.caddy, "caddy", "", "path to the Caddy binary built with reflex_upload (required)")
	flag.StringVar(&o.engines, "engines", "", "the folder of the engine scripts (install, start, stop) of this checkout (required)")
	flag.Var(&size, "size", "bytes of the file (e.g. 1073741824, 64MiB)")
	flag.IntVar(&o.rounds, "rounds", 3, "number of rounds (each round uploads once to every target)")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir (Caddyfiles, server logs) for debugging")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "timeout per upload")
	flag.Parse()
	o.size = int64(size)
	if flag.NArg() > 0 {
		kit.Usage(fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	if o.caddy == "" || o.engines == "" {
		flag.Usage()
		kit.Usage("-caddy and -engines are required (bench/s3/run.sh passes both)")
	}
	if o.rounds < 1 {
		kit.Usage("-rounds must be >= 1")
	}
	var err error
	if o.caddy, err = kit.AbsFile("-caddy", o.caddy); err != nil {
		kit.Usage(err.Error())
	}
	if o.engines, err = filepath.Abs(o.engines); err != nil {
		kit.Usage(err.Error())
	}
	kit.Main(func() error { return run(o) })
}

func run(o options) error {
	base, err := kit.TempDir("bench-s3-", o.keepTmp)
	if err != nil {
		return err
	}
	env, err := startEngines(o.engines, filepath.Join(base, "engines"))
	if err != nil {
		return err
	}
	// Caddy and tusd take the keys from the environment they inherit.
	for _, k := range []string{"S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION"} {
		os.Setenv(k, env[k])
	}
	client := newS3Client(env)
	ctx := context.Background()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("creating bucket: %w", err)
	}

	path := filepath.Join(base, fileName)
	if err := writeFile(path, o.size); err != nil {
		return err
	}
	fmt.Printf("file: %s on disk, %d rounds, versitygw at %s (posix backend, same disk)\n",
		kit.HumanBytes(o.size), o.rounds, env["S3_ENDPOINT"])

	targets := []*target{{
		name:   "s3 PutObject (aws-sdk-go-v2)",
		prefix: "putobject/",
		upload: func(ctx context.Context) error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = client.PutObject(ctx, &s3.PutObjectInput{
				Bucket:        aws.String(bucket),
				Key:           aws.String("putobject/" + fileName),
				Body:          f,
				ContentLength: aws.Int64(o.size),
			})
			return err
		},
	}}
	for _, hash := range []string{"none", "sha256"} {
		prefix := "caddy-" + hash
		m, _, err := kit.StartCaddyIn(base, prefix, o.caddy, []string{
			"fsync off",
			"hash " + hash,
			"storage s3 {",
			"\tbucket " + bucket,
			"\tendpoint {env.S3_ENDPOINT}",
			"\tregion {env.S3_REGION}",
			"\tprefix " + prefix,
			"\taccess_key {env.S3_ACCESS_KEY}",
			"\tsecret_key {env.S3_SECRET_KEY}",
			"\tpath_style",
			"}",
		})
		if err != nil {
			return fmt.Errorf("starting Caddy (hash %s): %w", hash, err)
		}
		u := "http://" + m.Addr + "/_upload"
		targets = append(targets, &target{
			name:   "caddy storage s3, hash " + hash,
			prefix: prefix + "/",
			upload: func(ctx context.Context) error { return multipartPost(ctx, u, path, o.size, hash == "sha256") },
		})
		if hash == "sha256" {
			targets = append(targets, &target{
				name:   "caddy storage s3 tus, one PATCH",
				prefix: prefix + "/",
				upload: func(ctx context.Context) error { return tusUpload(ctx, u+"/.uploads", path, o.size) },
			})
		}
	}
	self, err := kit.Self()
	if err != nil {
		return err
	}
	tusdDir, err := kit.Mkdir(base, "tusd")
	if err != nil {
		return err
	}
	tusdAddr, err := supervisor.FreeAddr()
	if err != nil {
		return err
	}
	if _, err := kit.StartServer(supervisor.Config{
		Name: "tusd",
		Argv: []string{self, tusdFlag, tusdAddr},
		Dir:  tusdDir,
		Log:  filepath.Join(tusdDir, "tusd.log"),
	}, tusdAddr, 30*time.Second); err != nil {
		return fmt.Errorf("starting tusd: %w", err)
	}
	targets = append(targets, &target{
		name:   "tusd v2 s3store, one PATCH",
		prefix: "tusd/",
		upload: func(ctx context.Context) error { return tusUpload(ctx, "http://"+tusdAddr+"/files/", path, o.size) },
	})

	for round := 1; round <= o.rounds; round++ {
		fmt.Printf("round %d/%d\n", round, o.rounds)
		for _, t := range kit.Shuffled(targets) {
			uctx, cancel := context.WithTimeout(ctx, o.timeout)
			start := time.Now()
			err := t.upload(uctx)
			secs := time.Since(start).Seconds()
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			// Untimed: the object's size, then remove what the target
			// left under its prefix, then flush the page cache's dirty
			// pages so that they do not slow the next upload.
			if err := checkAndClean(ctx, client, t.prefix, o.size); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			exec.Command("sync").Run()
			t.secs = append(t.secs, secs)
			fmt.Printf("  %-32s %7.3f s  %8.1f MiB/s  (object %d bytes checked)\n", t.name, secs, kit.MiBps(o.size, secs), o.size)
		}
	}

	fmt.Printf("\n%s per upload, %d rounds; ratio = median / PutObject's median\n\n", kit.HumanBytes(o.size), o.rounds)
	fmt.Printf("%-32s %14s %10s %18s\n", "target", "median MiB/s", "ratio", "min..max MiB/s")
	limit := kit.MiBps(o.size, kit.Median(targets[0].secs))
	for _, t := range targets {
		med := kit.MiBps(o.size, kit.Median(t.secs))
		lo, hi := kit.MinMax(t.secs, o.size)
		fmt.Printf("%-32s %14.1f %10.2f %18s\n", t.name, med, med/limit, fmt.Sprintf("%.0f..%.0f", lo, hi))
	}
	return nil
}

// startEngines runs ENGINES/start DIR (versitygw and redis-server on free
// ports), stops them with ENGINES/stop DIR at exit, and returns DIR/env.
func startEngines(engines, dir string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := exec.Command(filepath.Join(engines, "start"), dir)
	start.Stdout, start.Stderr = os.Stderr, os.Stderr
	err := start.Run()
	if _, statErr := os.Stat(filepath.Join(dir, "env")); statErr == nil {
		kit.AtCleanup(func() {
			stop := exec.Command(filepath.Join(engines, "stop"), dir)
			stop.Stdout, stop.Stderr = os.Stderr, os.Stderr
			stop.Run()
		})
	}
	if err != nil {
		return nil, fmt.Errorf("starting the engines: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, "env"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			env[k] = v
		}
	}
	return env, sc.Err()
}

// newS3Client is configured as the module's own client: static keys,
// path-style, signed payload, checksums only where S3 requires them.
func newS3Client(env map[string]string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     env["S3_REGION"],
		BaseEndpoint:               aws.String(env["S3_ENDPOINT"]),
		Credentials:                credentials.NewStaticCredentialsProvider(env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"], ""),
		UsePathStyle:               true,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// writeFile writes size bytes of random content (a 4 MiB buffer repeated)
// to path and flushes it.
func writeFile(path string, size int64) error {
	chunk, err := kit.RandomChunk()
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, kit.ContentAt(chunk, 0, size)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkAndClean checks that exactly one object under prefix has size bytes
// (besides tusd's .info object) and deletes everything under prefix.
func checkAndClean(ctx context.Context, c *s3.Client, prefix string, size int64) error {
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		return fmt.Errorf("listing %s: %w", prefix, err)
	}
	var found []string
	for _, obj := range out.Contents {
		key := aws.ToString(obj.Key)
		if strings.HasSuffix(key, ".info") {
			continue
		}
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: obj.Key})
		if err != nil {
			return fmt.Errorf("HeadObject %s: %w", key, err)
		}
		found = append(found, fmt.Sprintf("%s (%d bytes)", key, aws.ToInt64(head.ContentLength)))
		if aws.ToInt64(head.ContentLength) != size {
			return fmt.Errorf("object %s has %d bytes, want %d", key, aws.ToInt64(head.ContentLength), size)
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("want one object under %s, found %d: %v", prefix, len(found), found)
	}
	for _, obj := range out.Contents {
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: obj.Key}); err != nil {
			return fmt.Errorf("deleting %s: %w", aws.ToString(obj.Key), err)
		}
	}
	return nil
}

// freshClient makes a new connection per upload, no compression.
func freshClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives:  true,
		DisableCompression: true,
		DialContext:        (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
}

// multipartPost sends the file as one part (`files`, bench.bin) of a
// multipart/form-data POST with a known Content-Length and checks the
// answer: 201, files[0].size and, with wantHash, a sha256.
func multipartPost(ctx context.Context, u, path string, size int64, wantHash bool) error {
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	if _, err := mw.CreateFormFile("files", fileName); err != nil {
		return err
	}
	tail := "\r\n--" + mw.Boundary() + "--\r\n"
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	body := io.MultiReader(bytes.NewReader(head.Bytes()), f, strings.NewReader(tail))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return err
	}
	req.ContentLength = int64(head.Len()) + size + int64(len(tail))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := freshClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, raw)
	}
	var res struct {
		Files []struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("answer %.300s: %w", raw, err)
	}
	if len(res.Files) != 1 || res.Files[0].Size != size {
		return fmt.Errorf("answer %.300s: want one file of %d bytes", raw, size)
	}
	if wantHash && len(res.Files[0].SHA256) != 64 {
		return fmt.Errorf("answer %.300s: no sha256", raw)
	}
	return nil
}

// tusUpload creates a tus upload of size bytes at endpoint and sends the
// whole file in one PATCH; the time includes both requests.
func tusUpload(ctx context.Context, endpoint, path string, size int64) error {
	c := freshClient()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	req.Header.Set("Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte(fileName)))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("creation: HTTP %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	base, _ := url.Parse(endpoint)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err = http.NewRequestWithContext(ctx, http.MethodPatch, base.ResolveReference(loc).String(), f)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return err
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("PATCH: HTTP %d: %.300s", resp.StatusCode, raw)
	}
	if got := resp.Header.Get("Upload-Offset"); got != strconv.FormatInt(size, 10) {
		return fmt.Errorf("PATCH: Upload-Offset %q, want %d", got, size)
	}
	return nil
}

// serveTusdChild serves tusd and exits if this process was re-executed
// with tusdFlag; otherwise it returns at once.
func serveTusdChild() {
	if len(os.Args) != 3 || os.Args[1] != tusdFlag {
		return
	}
	if err := serveTusd(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "serve-tusd-s3:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveTusd serves tusd v2 with pkg/s3store (its defaults: 50 MiB
// preferred parts, buffered in temp files) and pkg/memorylocker on addr,
// into the bucket under tusd/, with a client set up as ours.
func serveTusd(addr string) error {
	env := map[string]string{}
	for _, k := range []string{"S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION"} {
		env[k] = os.Getenv(k)
	}
	store := s3store.New(bucket, newS3Client(env))
	store.ObjectPrefix = "tusd/"
	composer := tusd.NewStoreComposer()
	store.UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := tusd.NewHandler(tusd.Config{BasePath: "/files/", StoreComposer: composer})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", h))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}
