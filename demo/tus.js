// A small client for the tus 1.0.0 resumable upload protocol
// (https://tus.io/protocols/resumable-upload), enough for this page:
//
//   creation      POST {endpoint}  Upload-Length, Upload-Metadata (filename, filetype)
//                 → 201 Location: {endpoint}/{id}
//   append        PATCH {url}      Upload-Offset, the chunk (XMLHttpRequest, so
//                                  the browser reports upload progress)
//   resume        HEAD {url}       → Upload-Offset: where to go on
//   termination   DELETE {url}     (the cancel button)
//
// The upload URL of an unfinished upload is kept in localStorage under the
// file's fingerprint (name, size, last modified), so that the same file
// added again, after a reload or a lost connection, resumes where the server
// stopped instead of starting over.

import { UploadError, parseJSON } from "./server.js";

const TUS_VERSION = "1.0.0";
const STORE_PREFIX = "reflex-upload-demo:tus:";

// Waits before retries after a network failure or an interrupted PATCH.
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000];

// Error codes after which the upload is gone on the server: forget its URL.
const GONE = new Set(["upload-expired", "upload-not-found", "file-too-large", "file-invalid-type", "upload-cancelled"]);

// metadataValue encodes a metadata value: base64 of its UTF-8 bytes.
function metadataValue(s) {
	const bytes = new TextEncoder().encode(s);
	let bin = "";
	for (const b of bytes) bin += String.fromCharCode(b);
	return btoa(bin);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class TusUpload {
	// file: the File; name: the name to store it under (a relative path);
	// options: {endpoint, chunkSize, onProgress(sent), onStart(id, resumedAt)}.
	constructor(file, name, options) {
		this.file = file;
		this.name = name;
		this.endpoint = options.endpoint;
		this.chunkSize = options.chunkSize;
		this.onProgress = options.onProgress ?? (() => {});
		this.onStart = options.onStart ?? (() => {});
		this.url = null; // the upload URL, once created or found
		this.offset = 0;
		this.xhr = null; // the PATCH in flight
		this.cancelled = false;
		this.fingerprint = `${STORE_PREFIX}${name}\u0000${file.size}\u0000${file.lastModified}`;
	}

	// id is the upload's id: the last segment of its URL.
	get id() {
		return this.url ? this.url.split("/").pop() : null;
	}

	// start runs the upload to its end. It resolves when the server has the
	// whole file, and rejects with an UploadError when the server refuses it,
	// the network stays down, or the upload is cancelled (code "cancelled").
	async start() {
		this.url = localStorage.getItem(this.fingerprint);
		let resumed = false;
		if (this.url) resumed = await this.resume();
		if (!resumed) await this.create();
		this.onStart(this.id, resumed ? this.offset : null);
		this.onProgress(this.offset);

		let failures = 0;
		while (this.offset < this.file.size) {
			this.checkCancelled();
			try {
				this.offset = await this.patch();
				failures = 0;
			} catch (err) {
				this.checkCancelled();
				if (!retryable(err) || failures >= RETRY_DELAYS.length) {
					if (GONE.has(err.code)) this.forget();
					throw err;
				}
				await sleep(RETRY_DELAYS[failures++]);
				this.checkCancelled();
				// Ask the server where it stands before sending again.
				try {
					await this.head();
				} catch (headErr) {
					if (!retryable(headErr)) {
						this.forget();
						throw headErr;
					}
				}
			}
		}
		this.forget();
	}

	// create makes a new upload on the server.
	async create() {
		const type = this.file.type || "application/octet-stream";
		const res = await fetch(this.endpoint, {
			method: "POST",
			headers: {
				"Tus-Resumable": TUS_VERSION,
				"Upload-Length": String(this.file.size),
				"Upload-Metadata": `filename ${metadataValue(this.name)},filetype ${metadataValue(type)}`,
			},
		});
		if (res.status !== 201) throw new UploadError(res.status, parseJSON(await res.text()));
		const where = res.headers.get("Location");
		if (!where) throw new UploadError(res.status, { code: "no-location", detail: "the server gave no upload URL" });
		this.url = new URL(where, location.href).href;
		this.offset = Number(res.headers.get("Upload-Offset") ?? 0);
		localStorage.setItem(this.fingerprint, this.url);
		if (this.cancelled) {
			// Cancelled while the creation was in flight: terminate it now.
			await this.terminate();
			this.checkCancelled();
		}
	}

	// resume asks for the offset of a remembered upload; it answers false
	// when that upload is gone and a new one must be made.
	async resume() {
		try {
			await this.head();
			return true;
		} catch (err) {
			if (err.status === 0) throw err; // the network, not the upload
			this.forget();
			this.url = null;
			return false;
		}
	}

	// head reads the server's offset (HEAD).
	async head() {
		const res = await fetch(this.url, {
			method: "HEAD",
			headers: { "Tus-Resumable": TUS_VERSION },
			cache: "no-store",
		}).catch(() => null);
		if (!res) throw new UploadError(0, null);
		if (!res.ok) throw new UploadError(res.status, { code: res.status === 410 ? "upload-expired" : "upload-not-found" });
		const offset = Number(res.headers.get("Upload-Offset"));
		const length = res.headers.get("Upload-Length");
		if (!Number.isSafeInteger(offset) || (length !== null && Number(length) !== this.file.size)) {
			throw new UploadError(409, { code: "upload-mismatch", detail: "the server's upload is not this file" });
		}
		this.offset = offset;
		this.onProgress(offset);
	}

	// patch sends the next chunk and answers the new offset.
	patch() {
		const start = this.offset;
		const chunk = this.file.slice(start, Math.min(start + this.chunkSize, this.file.size));
		return new Promise((resolve, reject) => {
			const xhr = new XMLHttpRequest();
			this.xhr = xhr;
			xhr.open("PATCH", this.url);
			xhr.setRequestHeader("Tus-Resumable", TUS_VERSION);
			xhr.setRequestHeader("Upload-Offset", String(start));
			xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
			xhr.upload.onprogress = (e) => this.onProgress(start + Math.min(e.loaded, chunk.size));
			xhr.onload = () => {
				this.xhr = null;
				const offset = Number(xhr.getResponseHeader("Upload-Offset"));
				if (xhr.status === 204 && Number.isSafeInteger(offset)) resolve(offset);
				else reject(new UploadError(xhr.status, parseJSON(xhr.responseText)));
			};
			xhr.onerror = xhr.onabort = () => {
				this.xhr = null;
				reject(new UploadError(0, null));
			};
			xhr.send(chunk);
		});
	}

	// cancel stops the upload and terminates it on the server (DELETE). It
	// answers the status of the DELETE (null when no upload was made yet).
	async cancel() {
		this.cancelled = true;
		if (!this.url) return null; // creation in flight or not begun: create() terminates
		const status = await this.terminate();
		this.xhr?.abort();
		return status;
	}

	async terminate() {
		const res = await fetch(this.url, { method: "DELETE", headers: { "Tus-Resumable": TUS_VERSION } }).catch(() => null);
		if (res && (res.status === 204 || res.status === 404 || res.status === 410)) this.forget();
		return res ? res.status : 0;
	}

	checkCancelled() {
		if (this.cancelled) throw new UploadError(409, { code: "cancelled", detail: "cancelled" });
	}

	forget() {
		localStorage.removeItem(this.fingerprint);
	}
}

// retryable reports whether an error is worth a retry from the server's
// offset: the network, a server fault, a PATCH stopped by a newer request
// (upload-interrupted) or sent at the wrong offset (offset-mismatch).
function retryable(err) {
	return (
		err.status === 0 ||
		err.status >= 500 ||
		err.code === "upload-interrupted" ||
		err.code === "offset-mismatch"
	);
}

// unfinishedUploads lists the file names of the resumable uploads this
// browser started and did not finish.
export function unfinishedUploads() {
	const names = [];
	for (let i = 0; i < localStorage.length; i++) {
		const key = localStorage.key(i);
		if (key?.startsWith(STORE_PREFIX)) names.push(key.slice(STORE_PREFIX.length).split("\u0000")[0]);
	}
	return names;
}
