// Resumable uploads with the stock tus-js-client: vendor/tus-js-client/tus.min.js
// is its pinned browser build (loaded by index.html as a classic script, it
// defines window.tus; scripts/vendor-tus-js-client fetches it and records its
// sha256). This file only adapts it to the page: one TusUpload per file, the
// page's error type, and the list of unfinished uploads.
//
// The upload URL of an unfinished upload is kept in localStorage (by
// tus-js-client, under a fingerprint of the file's name, size and last
// modification), so that the same file added again, after a reload or a lost
// connection, resumes where the server stopped instead of starting over.

import { UploadError, parseJSON } from "./server.js";

const FINGERPRINT_PREFIX = "reflex-upload-demo:tus:";
// tus-js-client's key in localStorage: "tus::" + fingerprint + "::" + a random id.
const STORAGE_PREFIX = `tus::${FINGERPRINT_PREFIX}`;

// Waits before retries after a network failure or a status the client retries.
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000];

export class TusUpload {
	// file: the File; name: the name to store it under (a relative path);
	// options: {endpoint, chunkSize, onProgress(sent), onStart(id, resumedAt)}.
	constructor(file, name, options) {
		this.file = file;
		this.name = name;
		this.options = options;
		this.upload = null; // the tus.Upload
		this.resumedAt = null; // the offset a HEAD answered, when resuming
		this.fail = null; // rejects start()'s promise (cancel uses it)
	}

	// id is the upload's id: the last segment of its URL.
	get id() {
		return this.upload?.url ? this.upload.url.split("/").pop() : null;
	}

	// start runs the upload to its end. It resolves when the server has the
	// whole file, and rejects with an UploadError when the server refuses it,
	// the network stays down, or the upload is cancelled (code "cancelled").
	async start() {
		const onStart = this.options.onStart ?? (() => {});
		const onProgress = this.options.onProgress ?? (() => {});
		const fingerprint = `${FINGERPRINT_PREFIX}${this.name}\u0000${this.file.size}\u0000${this.file.lastModified}`;
		let started = false;
		const done = new Promise((resolve, reject) => {
			this.fail = reject;
			this.upload = new window.tus.Upload(this.file, {
				endpoint: this.options.endpoint,
				chunkSize: this.options.chunkSize,
				retryDelays: RETRY_DELAYS,
				metadata: { filename: this.name, filetype: this.file.type || "application/octet-stream" },
				fingerprint: () => Promise.resolve(fingerprint),
				storeFingerprintForResuming: true,
				removeFingerprintOnSuccess: true,
				onAfterResponse: (req, res) => {
					if (req.getMethod() === "HEAD" && res.getStatus() === 200) {
						this.resumedAt = Number(res.getHeader("Upload-Offset"));
					}
				},
				// Called again after each resume that follows a retry: the
				// page wants to hear of the upload once.
				onUploadUrlAvailable: () => {
					if (started) return;
					started = true;
					onStart(this.id, this.resumedAt);
				},
				onProgress: (sent) => onProgress(sent),
				onSuccess: () => resolve(),
				onError: (err) => reject(toUploadError(err)),
			});
		});
		const previous = await this.upload.findPreviousUploads();
		if (previous.length > 0) this.upload.resumeFromPreviousUpload(previous[0]);
		this.upload.start();
		return done;
	}

	// cancel stops the upload and terminates it on the server (DELETE), which
	// also forgets its URL here.
	async cancel() {
		this.fail?.(new UploadError(409, { code: "cancelled", detail: "cancelled" }));
		await this.upload?.abort(true).catch(() => {});
	}
}

// toUploadError turns tus-js-client's error into the page's: the server's
// status and JSON error body, or status 0 when no answer came.
function toUploadError(err) {
	const res = err.originalResponse;
	if (!res) return new UploadError(0, null);
	return new UploadError(res.getStatus(), parseJSON(res.getBody()));
}

// unfinishedUploads lists the file names of the resumable uploads this
// browser started and did not finish.
export function unfinishedUploads() {
	const names = [];
	for (let i = 0; i < localStorage.length; i++) {
		const key = localStorage.key(i);
		if (key?.startsWith(STORAGE_PREFIX)) names.push(key.slice(STORAGE_PREFIX.length).split("\u0000")[0]);
	}
	return names;
}
