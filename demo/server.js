// Talking to reflex_upload: the standard (multipart) upload, the progress
// endpoint and cancellation. The resumable (tus) client is in tus.js.

import { ENDPOINTS } from "./rules.js";

// UploadError is a refusal by the server, with its JSON error body
// {"detail", "code", "file"}, or a failure of the network (code "network").
export class UploadError extends Error {
	constructor(status, body) {
		super(body?.detail || `HTTP ${status}`);
		this.status = status;
		this.code = body?.code || (status === 0 ? "network-error" : `http-${status}`);
		this.detail = body?.detail || (status === 0 ? "the connection failed" : "");
		this.file = body?.file;
	}
}

// parseJSON reads a JSON body, or answers null.
export function parseJSON(text) {
	try {
		return JSON.parse(text);
	} catch {
		return null;
	}
}

// newUploadID makes a random X-Progress-ID (22 letters, digits, - and _).
// crypto.getRandomValues works on plain-HTTP pages too, unlike randomUUID.
export function newUploadID() {
	const bytes = crypto.getRandomValues(new Uint8Array(16));
	return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// standardUpload sends one file in one multipart POST (field "files", the
// relative path as the file name) under the upload id `id`. onProgress gets
// the bytes sent so far (XHR upload events). It answers {promise, abort}; the
// promise resolves to the server's 201 answer {upload_id, files, fields} or
// rejects with an UploadError.
export function standardUpload(file, name, id, onProgress) {
	const xhr = new XMLHttpRequest();
	const promise = new Promise((resolve, reject) => {
		xhr.open("POST", ENDPOINTS.upload);
		xhr.setRequestHeader("X-Progress-ID", id);
		xhr.upload.onprogress = (e) => onProgress(Math.min(e.loaded, file.size));
		xhr.onload = () => {
			const body = parseJSON(xhr.responseText);
			if (xhr.status === 201 && body) resolve(body);
			else reject(new UploadError(xhr.status, body));
		};
		xhr.onerror = () => reject(new UploadError(0, null));
		xhr.onabort = () => reject(new UploadError(0, { code: "aborted", detail: "aborted by the page" }));
		const form = new FormData();
		form.append("files", file, name);
		xhr.send(form);
	});
	return { promise, abort: () => xhr.abort() };
}

// getProgress reads an upload's progress:
// {state, received, size, speed, code, status, files}.
export async function getProgress(id) {
	const res = await fetch(ENDPOINTS.progress(id), { cache: "no-store" });
	if (!res.ok) throw new UploadError(res.status, parseJSON(await res.text()));
	return res.json();
}

// cancelUpload asks the server to cancel an upload (DELETE; for a tus upload
// this is termination). It answers the HTTP status and the error body, if any.
export async function cancelUpload(id, headers = {}) {
	const res = await fetch(ENDPOINTS.progress(id), { method: "DELETE", headers });
	return { status: res.status, body: res.status === 204 ? null : parseJSON(await res.text()) };
}

// ProgressPoller reads the progress endpoint every `interval` ms and hands
// each answer to onUpdate, until stop() is called.
export class ProgressPoller {
	constructor(id, interval, onUpdate) {
		this.id = id;
		this.interval = interval;
		this.onUpdate = onUpdate;
		this.timer = null;
		this.stopped = false;
	}

	start() {
		const tick = async () => {
			if (this.stopped) return;
			try {
				const p = await getProgress(this.id);
				if (!this.stopped) this.onUpdate(p);
			} catch {
				// A missed poll is harmless: the next one tries again.
			}
			if (!this.stopped) this.timer = setTimeout(tick, this.interval);
		};
		this.timer = setTimeout(tick, this.interval);
	}

	stop() {
		this.stopped = true;
		clearTimeout(this.timer);
	}
}

// finalProgress reads the progress endpoint until it shows a final state
// (done, error, cancelled), at most `tries` times, and answers the last read.
export async function finalProgress(id, tries = 20) {
	let last = null;
	for (let i = 0; i < tries; i++) {
		try {
			last = await getProgress(id);
			if (["done", "error", "cancelled"].includes(last.state)) return last;
		} catch {
			// try again
		}
		await new Promise((r) => setTimeout(r, 150));
	}
	return last;
}
