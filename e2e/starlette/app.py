"""A stand-in for a Reflex backend's upload endpoint, for reflex_upload's track mode.

Run: UPLOAD_DIR=/some/dir /usr/bin/python3 -m uvicorn app:app --host 127.0.0.1 --port PORT

POST /_upload takes Reflex's wire format: a multipart/form-data body with an
optional first text part "__reflex_event_args" (a JSON object) and one "files"
part per file, named file.path || file.name ("./a.png", "/dir/a.png",
"dir/sub/a.png"). Each file is written as a Reflex upload handler writes it:
UPLOAD_DIR / Path(filename.lstrip("/")), "." segments dropped, ".." refused,
folders created. Nothing is written until the whole body has arrived and
parsed; each file is written under a temp name beside its target and renamed,
so a cut body stores nothing.

With the headers Reflex-Client-Token and Reflex-Event-Handler the answer is
200 application/x-ndjson "{}\\n" (an empty state update, as Reflex answers);
without them 200 application/json [{"name", "size", "sha256"}, ...].

Every request is logged to stderr as JSON lines:
  {"event": "request", "rid": N, "method": ..., "path": ..., "headers": {...}}
  {"event": "body", "rid": N, "complete": true|false, "bytes": N, "body_sha256": ..., "error": ...}
  {"event": "stored", "rid": N, "path": ..., "size": N, "sha256": ...}
  {"event": "response", "rid": N, "status": N}
"""

import hashlib
import itertools
import json
import os
import secrets
import sys
import time
from pathlib import Path, PurePosixPath

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

UPLOAD_DIR = Path(os.environ.get("UPLOAD_DIR", "uploaded_files")).resolve()
# Text parts (such as __reflex_event_args) larger than this are refused; file
# parts are spooled to disk past 1 MiB by Starlette, whatever their size.
MAX_TEXT_PART = 1024 * 1024
COPY_CHUNK = 1024 * 1024

_rids = itertools.count(1)


def log(event, rid, **fields):
    line = {"event": event, "rid": rid, "t": round(time.time(), 3)}
    line.update(fields)
    print(json.dumps(line, sort_keys=False), file=sys.stderr, flush=True)


class BadRequest(Exception):
    pass


class TrackingParser(MultiPartParser):
    """Starlette's multipart parser, remembering whether the closing boundary came."""

    ended = False

    def on_end(self) -> None:
        self.ended = True

    def close_files(self):
        for f in self._files_to_close_on_error:
            try:
                f.close()
            except Exception:
                pass


class CountingStream:
    """Wraps request.stream(), counting the bytes and noting a clean end."""

    def __init__(self, request):
        self.request = request
        self.bytes = 0
        self.sha256 = hashlib.sha256()
        self.eof = False

    async def __aiter__(self):
        async for chunk in self.request.stream():
            self.bytes += len(chunk)
            self.sha256.update(chunk)
            yield chunk
        self.eof = True


def target_path(filename):
    """Where a Reflex handler would write filename, or BadRequest."""
    if not filename or "\x00" in filename:
        raise BadRequest(f"invalid filename {filename!r}")
    rel = PurePosixPath(filename.lstrip("/"))  # drops "." and empty segments
    if ".." in rel.parts:
        raise BadRequest(f"filename {filename!r} contains '..'")
    if not rel.parts:
        raise BadRequest(f"invalid filename {filename!r}")
    return UPLOAD_DIR.joinpath(*rel.parts)


def store(upload, target):
    """Copy an UploadFile's spooled bytes to target via a temp name; returns (size, sha256)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    h = hashlib.sha256()
    size = 0
    try:
        src = upload.file
        src.seek(0)
        with open(tmp, "wb") as out:
            while True:
                buf = src.read(COPY_CHUNK)
                if not buf:
                    break
                h.update(buf)
                size += len(buf)
                out.write(buf)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return size, h.hexdigest()


async def upload(request: Request):
    rid = next(_rids)
    log("request", rid, method=request.method, path=request.url.path,
        query=request.url.query, headers=dict(request.headers))
    status = 500
    try:
        resp = await handle(request, rid)
        status = resp.status_code
        return resp
    except ClientDisconnect:
        status = 499  # nobody to answer
        return Response(status_code=400)
    finally:
        log("response", rid, status=status)


async def handle(request: Request, rid):
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        log("body", rid, complete=False, bytes=0, error="not multipart/form-data")
        return JSONResponse({"detail": "expected multipart/form-data"}, status_code=400)

    stream = CountingStream(request)
    parser = TrackingParser(request.headers, stream.__aiter__(), max_part_size=MAX_TEXT_PART)
    try:
        try:
            form = await parser.parse()
        except ClientDisconnect:
            log("body", rid, complete=False, bytes=stream.bytes, error="client disconnected")
            raise
        except MultiPartException as e:
            log("body", rid, complete=False, bytes=stream.bytes, error=f"multipart: {e.message}")
            return JSONResponse({"detail": e.message}, status_code=400)
        except Exception as e:  # a malformed body the parser chokes on
            log("body", rid, complete=False, bytes=stream.bytes, error=f"{type(e).__name__}: {e}")
            return JSONResponse({"detail": "malformed multipart body"}, status_code=400)
        if not (stream.eof and parser.ended):
            log("body", rid, complete=False, bytes=stream.bytes,
                error="body ended before the closing boundary")
            return JSONResponse({"detail": "truncated multipart body"}, status_code=400)
        log("body", rid, complete=True, bytes=stream.bytes, body_sha256=stream.sha256.hexdigest())

        fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        files = [(k, v) for k, v in form.multi_items() if not isinstance(v, str)]
        event_args = None
        for k, v in fields:
            if k == "__reflex_event_args":
                try:
                    event_args = json.loads(v)
                except ValueError:
                    event_args = None
                if not isinstance(event_args, dict):
                    return JSONResponse({"detail": "__reflex_event_args must be a JSON object"},
                                        status_code=400)
        log("form", rid, fields={k: v for k, v in fields},
            files=[{"field": k, "filename": f.filename} for k, f in files])

        uploads = [f for k, f in files if k == "files"]
        try:
            targets = [target_path(f.filename) for f in uploads]
        except BadRequest as e:
            return JSONResponse({"detail": str(e)}, status_code=400)

        stored = []
        for f, target in zip(uploads, targets):
            size, digest = await run_in_threadpool(store, f, target)
            rel = target.relative_to(UPLOAD_DIR).as_posix()
            log("stored", rid, path=rel, size=size, sha256=digest)
            stored.append({"name": rel, "size": size, "sha256": digest})
    finally:
        parser.close_files()

    if request.headers.get("reflex-client-token") and request.headers.get("reflex-event-handler"):
        return Response(b"{}\n", status_code=200, media_type="application/x-ndjson")
    return JSONResponse(stored, status_code=200)


async def health(request: Request):
    return Response(b"ok\n", media_type="text/plain")


app = Starlette(routes=[
    Route("/_upload", upload, methods=["POST"]),
    Route("/_upload/", upload, methods=["POST"]),
    Route("/healthz", health, methods=["GET"]),
])
