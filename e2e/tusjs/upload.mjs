#!/usr/bin/env node
// upload.mjs uploads one file to a tus endpoint with the real tus-js-client
// (its Node build) and prints ONE JSON line on stdout when it ends:
//
//	{"ok":true,"url":"<upload url>","bytesSent":N,"cuts":N,"retries":N,"ms":N}
//	{"ok":false,"error":"...","cuts":N,"retries":N,"ms":N}      (exit status 1)
//
// Everything else (progress, retries, the proxy's doings) goes to stderr, one
// event a line, so that a test can follow the upload while it runs:
//
//	progress sent=N total=N          bytes handed to the socket (throttled)
//	http METHOD URL status=N [x-instance=NAME] [upload-offset=N] [upload-length=N] [location=URL]
//	chunk accepted=N total=N         a PATCH was answered; N is the server's offset
//	retry attempt=N status=N error=...
//	proxy listening=127.0.0.1:P target=host:port
//	proxy cut conn=N after=N         the proxy destroyed a connection
//	proxy stall conn=N after=N       the proxy stopped forwarding a connection's request bytes
//	proxy cuts=N
//
// Usage:
//
//	node upload.mjs --endpoint URL --file PATH [--chunk-size BYTES] [--parallel N]
//	  [--filename NAME] [--filetype TYPE] [--header K=V ...]
//	  [--retry-delays 0,200,500,1000,2000] [--source stream|buffer]
//	  [--proxy-cut-after BYTES] [--proxy-stall-after BYTES] [--proxy-rate BYTES_PER_SECOND]
//
// --proxy-cut-after BYTES puts a TCP proxy (127.0.0.1, random port) in front of
// the endpoint's host:port. It forwards both ways, but destroys the first
// client connection that has carried more than BYTES of request bytes, once;
// the client then resumes through the proxy via its retryDelays (HEAD, then
// PATCH from the server's offset). --proxy-stall-after BYTES does the same,
// once, but instead of cutting it stops forwarding that connection's request
// bytes and keeps it open both ways (an uplink that stalls while the
// connection survives): the server's answer still reaches the client.
// --proxy-rate also starts the proxy and
// limits the request bytes it forwards, all connections together, to that many
// bytes a second (tus-js-client itself cannot throttle), so that a test has time
// to act while an upload is in flight.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import process from 'node:process';
import * as tus from 'tus-js-client';

const started = Date.now();
let cuts = 0;
let retries = 0;
let proxy = null;

function log(line) {
  process.stderr.write(`${line}\n`);
}

function finish(result, code) {
  result.cuts = cuts;
  result.retries = retries;
  result.ms = Date.now() - started;
  if (proxy) {
    log(`proxy cuts=${cuts}`);
    proxy.close();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
}

function fail(message) {
  finish({ ok: false, error: String(message) }, 1);
}

function parseArgs(argv) {
  const opts = {
    headers: {},
    retryDelays: [0, 200, 500, 1000, 2000],
    source: 'stream',
    filetype: 'application/octet-stream',
  };
  const need = (i, name) => {
    if (i + 1 >= argv.length) throw new Error(`${name} needs a value`);
    return argv[i + 1];
  };
  const int = (v, name, min) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name}: ${JSON.stringify(v)} is not an integer >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    const v = need(i, name);
    switch (name) {
      case '--endpoint': opts.endpoint = v; break;
      case '--file': opts.file = v; break;
      case '--chunk-size': opts.chunkSize = int(v, name, 1); break;
      case '--parallel': opts.parallel = int(v, name, 1); break;
      case '--filename': opts.filename = v; break;
      case '--filetype': opts.filetype = v; break;
      case '--header': {
        const eq = v.indexOf('=');
        if (eq <= 0) throw new Error(`--header: ${JSON.stringify(v)} is not K=V`);
        opts.headers[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case '--retry-delays':
        opts.retryDelays = v === '' ? [] : v.split(',').map((d) => int(d.trim(), name, 0));
        break;
      case '--source':
        if (v !== 'stream' && v !== 'buffer') throw new Error('--source: stream or buffer');
        opts.source = v;
        break;
      case '--proxy-cut-after': opts.cutAfter = int(v, name, 0); break;
      case '--proxy-stall-after': opts.stallAfter = int(v, name, 0); break;
      case '--proxy-rate': opts.rate = int(v, name, 1); break;
      default: throw new Error(`unknown argument ${JSON.stringify(name)}`);
    }
  }
  if (!opts.endpoint) throw new Error('--endpoint is required');
  if (!opts.file) throw new Error('--file is required');
  if (opts.filename === undefined) opts.filename = path.basename(opts.file);
  return opts;
}

// TokenBucket hands out request bytes at `rate` bytes a second to every
// connection together; take(n) resolves once n bytes may pass.
class TokenBucket {
  constructor(rate) {
    this.rate = rate;
    this.next = Date.now();
  }

  take(n) {
    const now = Date.now();
    if (this.next < now) this.next = now;
    const wait = this.next - now;
    this.next += (n * 1000) / this.rate;
    return wait > 0 ? new Promise((r) => { setTimeout(r, wait); }) : Promise.resolve();
  }
}

// startProxy listens on 127.0.0.1:0 and forwards each connection to
// targetHost:targetPort.
function startProxy(targetHost, targetPort, cutAfter, stallAfter, rate) {
  const bucket = rate ? new TokenBucket(rate) : null;
  const sockets = new Set();
  let connCount = 0;
  let cutDone = false;
  let stallDone = false;
  const server = net.createServer((client) => {
    const id = ++connCount;
    let carried = 0;
    let closed = false;
    let stalled = false;
    const upstream = net.connect({ host: targetHost, port: targetPort });
    sockets.add(client);
    sockets.add(upstream);
    const close = () => {
      if (closed) return;
      closed = true;
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    upstream.on('end', () => client.end());
    client.on('end', () => upstream.end());
    upstream.pipe(client, { end: false });

    // Request bytes: counted, maybe cut, maybe throttled, with backpressure.
    // Pieces of at most 64 KiB so that a cut lands where it was asked to and
    // the throttle stays smooth.
    let chain = Promise.resolve();
    client.on('data', (data) => {
      if (stalled) return; // swallowed: the uplink stalls for good
      client.pause();
      chain = chain.then(async () => {
        for (let off = 0; off < data.length && !closed;) {
          let piece = data.subarray(off, off + 65536);
          if (cutAfter !== undefined && !cutDone && carried + piece.length > cutAfter) {
            piece = piece.subarray(0, cutAfter - carried);
            if (piece.length > 0) upstream.write(piece);
            carried += piece.length;
            cutDone = true;
            cuts++;
            log(`proxy cut conn=${id} after=${carried}`);
            // A reset, not a polite FIN: the connection is cut mid-request.
            client.resetAndDestroy();
            upstream.resetAndDestroy();
            close();
            return;
          }
          if (stallAfter !== undefined && !stallDone && carried + piece.length > stallAfter) {
            piece = piece.subarray(0, stallAfter - carried);
            if (piece.length > 0) upstream.write(piece);
            carried += piece.length;
            stallDone = true;
            stalled = true;
            log(`proxy stall conn=${id} after=${carried}`);
            // Read on (and drop) what the client sends, so that it is not
            // blocked by backpressure and reads the server's answer.
            client.resume();
            return;
          }
          if (bucket) await bucket.take(piece.length);
          if (closed) return;
          off += piece.length;
          carried += piece.length;
          if (!upstream.write(piece)) {
            await new Promise((r) => {
              const done = () => { upstream.off('drain', done); upstream.off('close', done); r(); };
              upstream.on('drain', done);
              upstream.on('close', done);
            });
          }
        }
        if (!closed) client.resume();
      });
    });
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      log(`proxy listening=127.0.0.1:${port} target=${targetHost}:${targetPort}`);
      resolve({
        port,
        close() {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    fail(err.message);
    return;
  }

  let size;
  try {
    size = fs.statSync(opts.file).size;
  } catch (err) {
    fail(`cannot read --file: ${err.message}`);
    return;
  }

  let endpoint = opts.endpoint;
  let realURL = (u) => u;
  if (opts.cutAfter !== undefined || opts.stallAfter !== undefined || opts.rate !== undefined) {
    const u = new URL(endpoint);
    const port = u.port ? Number(u.port) : (u.protocol === 'https:' ? 443 : 80);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    proxy = await startProxy(host, port, opts.cutAfter, opts.stallAfter, opts.rate);
    const real = u.host;
    u.hostname = '127.0.0.1';
    u.port = String(proxy.port);
    endpoint = u.toString();
    // The upload URL as the endpoint's own server serves it: the proxy is
    // gone once this script exits.
    const proxied = u.host;
    realURL = (s) => {
      if (!s) return s;
      const r = new URL(s, endpoint);
      if (r.host === proxied) r.host = real;
      return r.toString();
    };
  }

  const input = opts.source === 'buffer' ? fs.readFileSync(opts.file) : fs.createReadStream(opts.file);
  let lastProgress = 0;
  let accepted = 0;

  const options = {
    endpoint,
    metadata: { filename: opts.filename, filetype: opts.filetype },
    headers: opts.headers,
    retryDelays: opts.retryDelays,
    removeFingerprintOnSuccess: true,
    onProgress(sent, total) {
      const now = Date.now();
      if (now - lastProgress >= 200 || sent === total) {
        lastProgress = now;
        log(`progress sent=${sent} total=${total}`);
      }
    },
    // Every answered request, parallel parts included: a test counts the
    // creations (POST) to tell a resumed upload from one started anew.
    onAfterResponse(req, res) {
      const h = (name) => res.getHeader(name);
      const extra = ['X-Instance', 'Upload-Offset', 'Upload-Length', 'Location']
        .filter((name) => h(name) !== undefined && h(name) !== null)
        .map((name) => ` ${name.toLowerCase()}=${name === 'Location' ? realURL(new URL(h(name), req.getURL()).toString()) : h(name)}`)
        .join('');
      log(`http ${req.getMethod()} ${realURL(req.getURL())} status=${res.getStatus()}${extra}`);
    },
    onChunkComplete(_chunk, acc, total) {
      accepted = Math.max(accepted, acc);
      log(`chunk accepted=${acc} total=${total}`);
    },
    // The default rule of tus-js-client (retry unless a 4xx other than 409
    // and 423), logged so that a test can see that the client did resume.
    onShouldRetry(err, attempt) {
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      const retry = !(status >= 400 && status < 500) || status === 409 || status === 423;
      const cause = err.causingError ? err.causingError.message : err.message;
      if (retry) retries++;
      log(`retry attempt=${attempt + 1} status=${status} retry=${retry} error=${JSON.stringify(String(cause).split('\n')[0])}`);
      return retry;
    },
    onError(err) {
      fail(err && err.message ? err.message : err);
    },
    onSuccess() {
      finish({ ok: true, url: realURL(upload.url), bytesSent: size }, 0);
    },
  };
  if (opts.chunkSize !== undefined) options.chunkSize = opts.chunkSize;
  if (opts.parallel !== undefined) options.parallelUploads = opts.parallel;

  const upload = new tus.Upload(input, options);
  upload.start();
}

main().catch((err) => fail(err && err.stack ? err.stack : err));
