// The demo page: picks and drops files, uploads each one (standard multipart
// POST, or resumable over tus), shows progress from the browser and from the
// server, cancels, and lists what was stored.
//
// Every file name is put into the page with textContent or as an attribute
// value, never as HTML.

import { RULES, SETTINGS, ENDPOINTS, readServerRules, formatBytes } from "./rules.js";
import {
	UploadError,
	standardUpload,
	newUploadID,
	cancelUpload,
	ProgressPoller,
	finalProgress,
} from "./server.js";
import { TusUpload, unfinishedUploads } from "./tus.js";
import { fromInput, fromDrop } from "./files.js";
import { loadStored, remember, forgetAll } from "./stored.js";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// State: one item per file added during this page view.
//
// item = {
//   file, name,              the File and the name it is sent under
//   mode,                    "standard" | "tus"
//   state,                   "queued" | "uploading" | "cancelling" | "done" | "error" | "cancelled"
//   sent,                    bytes the browser has sent (XHR upload events)
//   server,                  the last answer of the progress endpoint
//   id,                      the upload id (X-Progress-ID, or the tus URL's last segment)
//   job,                     {abort} of a standard upload, or the TusUpload
//   el,                      its <li> and parts
// }
const items = [];
const waiting = []; // items not started yet, in order
let running = 0;
let renderedCount = 0; // for unique element ids

// ---------------------------------------------------------------------------
// Announcements for screen readers (the role=status region).

let announcing = null;

function announce(message) {
	const region = $("announcer");
	// Clear first, so that the same message twice is read twice; a newer
	// message replaces one still waiting.
	clearTimeout(announcing);
	region.textContent = "";
	announcing = setTimeout(() => {
		region.textContent = message;
	}, 50);
}

// ---------------------------------------------------------------------------
// Adding files.

function addFiles(list) {
	if (list.length === 0) return;
	const forceTus = $("tus-switch").checked;
	const batch = document.createDocumentFragment(); // newest batch on top, in the order given
	for (const { file, name } of list) {
		const item = {
			file,
			name,
			mode: forceTus || file.size > SETTINGS.autoTusOver ? "tus" : "standard",
			state: "queued",
			sent: 0,
			server: null,
			id: null,
			job: null,
		};
		item.el = renderItem(item);
		batch.append(item.el.li);
		items.push(item);
		waiting.push(item);
	}
	$("uploads").prepend(batch);
	// On a narrow screen the list is below the drop zone: bring it into view.
	const panel = $("uploads-title");
	if (panel.getBoundingClientRect().top > window.innerHeight * 0.8) {
		panel.scrollIntoView({ block: "start", behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth" });
	}
	announce(list.length === 1 ? `Uploading ${list[0].name}` : `Uploading ${list.length} files`);
	updateOverall();
	pump();
}

// pump starts waiting uploads while fewer than SETTINGS.parallel run.
function pump() {
	while (running < SETTINGS.parallel && waiting.length > 0) {
		const item = waiting.shift();
		if (item.state !== "queued") continue; // cancelled while waiting
		running++;
		const run = item.mode === "tus" ? runTus(item) : runStandard(item);
		run.finally(() => {
			running--;
			pump();
		});
	}
}

// ---------------------------------------------------------------------------
// A standard upload: one multipart POST per file with X-Progress-ID, browser
// progress from XHR upload events and the server's view from the progress
// endpoint.

async function runStandard(item) {
	item.id = newUploadID();
	setState(item, "uploading");
	const poller = new ProgressPoller(item.id, SETTINGS.pollInterval, (p) => showServer(item, p));
	poller.start();
	const job = standardUpload(item.file, item.name, item.id, (sent) => showSent(item, sent));
	item.job = job;
	try {
		const answer = await job.promise;
		poller.stop();
		finishDone(item, answer.files);
	} catch (err) {
		poller.stop();
		if (item.state === "cancelling" || isFinal(item.state)) return; // cancel() reads the final state
		if (err.code === "upload-cancelled") {
			// Cancelled elsewhere (another tab, a script): say so.
			finishCancelled(item, await finalProgress(item.id));
			return;
		}
		finishError(item, err);
	}
}

// ---------------------------------------------------------------------------
// A resumable upload with the tus client.

async function runTus(item) {
	setState(item, "uploading");
	let poller = null;
	const tus = new TusUpload(item.file, item.name, {
		endpoint: ENDPOINTS.tus,
		chunkSize: SETTINGS.tusChunkSize,
		onProgress: (sent) => showSent(item, sent),
		onStart: (id, resumedAt) => {
			item.id = id;
			if (resumedAt !== null) {
				item.resumedAt = resumedAt;
				announce(`Resuming ${item.name} at ${formatBytes(resumedAt)}`);
			}
			poller = new ProgressPoller(id, SETTINGS.pollInterval * 2, (p) => showServer(item, p));
			poller.start();
		},
	});
	item.job = tus;
	try {
		await tus.start();
		poller?.stop();
		// The last PATCH answers only the offset: the stored file is in the progress.
		const p = await finalProgress(item.id);
		if (p?.state === "done" && p.files?.length) finishDone(item, p.files);
		else finishError(item, new UploadError(500, { code: "unknown", detail: `the server says ${p?.state ?? "nothing"}` }));
	} catch (err) {
		poller?.stop();
		if (item.state === "cancelling" || isFinal(item.state)) return; // cancel() reads the final state
		finishError(item, err);
	}
}

// ---------------------------------------------------------------------------
// Cancel: DELETE {prefix}/.uploads/{id}, then the final state as the server
// reports it on the progress endpoint (state "cancelled").

async function cancel(item) {
	if (item.state === "queued") {
		finishCancelled(item, null);
		return;
	}
	if (item.state !== "uploading") return;
	setState(item, "cancelling");
	if (item.mode === "tus") {
		await item.job.cancel();
	} else {
		const { status } = await cancelUpload(item.id).catch(() => ({ status: 0 }));
		item.cancelStatus = status;
		if (status !== 204) {
			// Not in flight on the server (not started yet, or finished at
			// this moment): stop the request here.
			item.job.abort();
		}
	}
	// The server's last word. A standard upload the server never saw (the
	// DELETE found nothing) has no final state there: read it once.
	const p = item.id ? await finalProgress(item.id, item.mode === "standard" && item.cancelStatus !== 204 ? 1 : 20) : null;
	if (p?.state === "done" && p.files?.length) {
		finishDone(item, p.files); // it finished before the cancel arrived
		announce(`${item.name} had finished before the cancel arrived`);
	} else {
		finishCancelled(item, p);
	}
}

// ---------------------------------------------------------------------------
// Showing an upload.

function renderItem(item) {
	const li = $("upload-template").content.firstElementChild.cloneNode(true);
	const nameId = `upload-${++renderedCount}-name`;
	li.dataset.name = item.name;
	const name = li.querySelector(".upload-name");
	name.id = nameId;
	name.textContent = item.name;
	name.title = item.name;
	li.querySelector(".badge").textContent = item.mode === "tus" ? "resumable" : "standard";
	const bar = li.querySelector(".upload-bar");
	bar.max = Math.max(item.file.size, 1);
	bar.setAttribute("aria-labelledby", nameId);
	const button = li.querySelector(".cancel");
	button.setAttribute("aria-label", `Cancel ${item.name}`);
	button.addEventListener("click", () => cancel(item));
	const el = {
		li,
		bar,
		button,
		state: li.querySelector(".state"),
		detail: li.querySelector(".detail"),
	};
	item.el = el;
	setState(item, "queued");
	return el;
}

const STATE_TEXT = {
	queued: "waiting",
	uploading: "uploading",
	cancelling: "cancelling…",
	done: "done",
	error: "refused",
	cancelled: "cancelled",
};

function setState(item, state) {
	item.state = state;
	const { li, state: stateEl, button } = item.el;
	li.dataset.state = state;
	stateEl.textContent = STATE_TEXT[state];
	button.hidden = !["queued", "uploading"].includes(state);
	if (state === "queued") item.el.detail.textContent = formatBytes(item.file.size);
	$("clear-finished").hidden = !items.some((i) => isFinal(i.state));
	updateOverall();
}

const isFinal = (state) => state === "done" || state === "error" || state === "cancelled";

// showSent shows what the browser has sent, with the server's view beside it.
function showSent(item, sent) {
	if (item.state !== "uploading") return;
	item.sent = sent;
	item.el.bar.value = sent;
	renderProgressText(item);
	updateOverall();
}

function showServer(item, p) {
	if (item.state !== "uploading") return;
	item.server = p;
	renderProgressText(item);
}

function renderProgressText(item) {
	const size = item.file.size;
	const pct = size > 0 ? Math.floor((item.sent / size) * 100) : 100;
	item.el.state.textContent = `uploading ${pct}%`;
	let text = `${formatBytes(item.sent)} of ${formatBytes(size)}`;
	if (item.resumedAt) text += ` (resumed at ${formatBytes(item.resumedAt)})`;
	const p = item.server;
	if (p && p.state !== "starting") {
		text += ` · server: ${p.state}, ${formatBytes(p.received)} received`;
		if (p.speed > 0) text += `, ${formatBytes(p.speed)}/s`;
	}
	item.el.detail.textContent = text;
}

function finishDone(item, files) {
	setState(item, "done");
	item.sent = item.file.size;
	item.el.bar.value = item.el.bar.max;
	const f = files[0];
	const detail = item.el.detail;
	detail.textContent = "";
	const link = document.createElement("a");
	link.href = f.url;
	link.textContent = f.path;
	detail.append(f.path === item.name ? "stored as " : "stored (renamed) as ", link, ` · ${formatBytes(f.size)}`);
	if (item.server?.speed > 0) detail.append(` · ${formatBytes(item.server.speed)}/s`);
	remember(files);
	renderStored();
	announce(`${item.name} uploaded`);
}

function finishError(item, err) {
	setState(item, "error");
	if (err.status === 0 || err.status >= 500 || err.code === "network-error") item.el.state.textContent = "failed";
	const detail = item.el.detail;
	detail.textContent = "";
	const code = document.createElement("code");
	code.className = "code";
	code.textContent = err.code;
	detail.append(code);
	if (err.detail) detail.append(`: ${err.detail}`);
	announce(`${item.name} refused: ${err.code}${err.detail ? `, ${err.detail}` : ""}`);
}

function finishCancelled(item, p) {
	setState(item, "cancelled");
	let text;
	if (!p) text = "not started; nothing was sent";
	else if (p.state === "starting") text = "stopped before the server saw it; nothing was stored";
	else text = `the server says ${p.state} after ${formatBytes(p.received)}; nothing was stored`;
	item.el.detail.textContent = text;
	announce(`${item.name} cancelled`);
}

// updateOverall shows the bytes sent over all uploads still counted (those
// refused or cancelled drop out).
function updateOverall() {
	const counted = items.filter((i) => i.state !== "error" && i.state !== "cancelled");
	const total = counted.reduce((n, i) => n + i.file.size, 0);
	const sent = counted.reduce((n, i) => n + (i.state === "done" ? i.file.size : i.sent), 0);
	const done = items.filter((i) => i.state === "done").length;
	const failed = items.filter((i) => i.state === "error").length;
	const cancelled = items.filter((i) => i.state === "cancelled").length;
	const bar = $("overall");
	bar.max = Math.max(total, 1);
	bar.value = total > 0 ? sent : counted.length > 0 ? 1 : 0;
	const parts = [`${done} of ${items.length} done`];
	if (failed) parts.push(`${failed} refused`);
	if (cancelled) parts.push(`${cancelled} cancelled`);
	if (total > 0) parts.push(`${formatBytes(sent)} of ${formatBytes(total)}`);
	$("overall-label").textContent = items.length ? `All uploads: ${parts.join(" · ")}` : "No uploads yet";
}

function clearFinished() {
	for (let i = items.length - 1; i >= 0; i--) {
		if (isFinal(items[i].state)) {
			items[i].el.li.remove();
			items.splice(i, 1);
		}
	}
	$("clear-finished").hidden = true;
	updateOverall();
	$("dropzone").focus();
}

// ---------------------------------------------------------------------------
// The stored files of this browser.

const IMAGE_TYPES = /^image\/(png|jpeg|gif|webp|avif|bmp|svg\+xml|x-icon|vnd\.microsoft\.icon)\b/;

function renderStored() {
	const list = loadStored();
	const ul = $("stored");
	ul.textContent = "";
	$("stored-empty").hidden = list.length > 0;
	$("forget-stored").hidden = list.length === 0;
	for (const f of list) {
		const li = document.createElement("li");
		li.className = "stored-file";
		li.dataset.path = f.path;
		const link = document.createElement("a");
		link.href = f.url;
		link.className = "stored-link";
		if (IMAGE_TYPES.test(f.content_type ?? "")) {
			const img = document.createElement("img");
			img.src = f.url; // shown by <img> although the server sends it as an attachment
			img.alt = "";
			img.loading = "lazy";
			img.className = "thumb";
			link.append(img);
		} else {
			const icon = document.createElement("span");
			icon.className = "thumb file-icon";
			icon.setAttribute("aria-hidden", "true");
			icon.textContent = extension(f.path);
			link.append(icon);
		}
		const name = document.createElement("span");
		name.className = "stored-name";
		name.textContent = f.path;
		link.append(name);
		const meta = document.createElement("span");
		meta.className = "stored-meta";
		meta.textContent = `${formatBytes(f.size)} · ${(f.content_type ?? "").split(";")[0] || "unknown type"}`;
		li.append(link, meta);
		ul.append(li);
	}
}

function extension(path) {
	const base = path.split("/").pop();
	const dot = base.lastIndexOf(".");
	return dot > 0 && base.length - dot <= 6 ? base.slice(dot + 1).toUpperCase() : "FILE";
}

// ---------------------------------------------------------------------------
// Rules and hints.

async function showRules() {
	$("chunk-size").textContent = formatBytes(SETTINGS.tusChunkSize);
	$("auto-tus").textContent = formatBytes(SETTINGS.autoTusOver);
	$("rule-max-files").textContent = String(RULES.maxFiles);
	$("rule-accept").textContent = RULES.accept ? RULES.accept.join(", ") : "All";
	$("rule-conflict").textContent = { rename: "Renamed", overwrite: "Replaced", reject: "Refused" }[RULES.onConflict];
	$("rule-conflict").title = { rename: "a.png, then a (1).png", overwrite: "the newer file wins", reject: "file-exists" }[RULES.onConflict];
	const rules = await readServerRules();
	const max = $("rule-max-size");
	max.textContent = formatBytes(rules.maxSize);
	max.title = rules.maxSizeFrom === "server" ? "as the server reports it (Tus-Max-Size)" : "from Caddyfile.example";
	max.dataset.from = rules.maxSizeFrom;
}

function showUnfinished() {
	const names = unfinishedUploads();
	const p = $("unfinished");
	p.hidden = names.length === 0;
	p.textContent = names.length
		? `Unfinished resumable upload${names.length > 1 ? "s" : ""}: ${names.join(", ")}. Add the same file again to resume.`
		: "";
}

// ---------------------------------------------------------------------------
// Wiring.

function setup() {
	const fileInput = $("file-input");
	const folderInput = $("folder-input");
	const zone = $("dropzone");

	zone.addEventListener("click", () => fileInput.click());
	$("pick-folder").addEventListener("click", () => folderInput.click());
	for (const input of [fileInput, folderInput]) {
		input.addEventListener("change", () => {
			addFiles(fromInput(input));
			input.value = ""; // the same file can be picked again
		});
	}

	// Drops on the zone upload; drops elsewhere must not open the file.
	let depth = 0;
	zone.addEventListener("dragenter", (e) => {
		e.preventDefault();
		depth++;
		zone.classList.add("over");
	});
	zone.addEventListener("dragleave", () => {
		if (--depth <= 0) {
			depth = 0;
			zone.classList.remove("over");
		}
	});
	zone.addEventListener("dragover", (e) => {
		e.preventDefault();
		e.dataTransfer.dropEffect = "copy";
	});
	zone.addEventListener("drop", async (e) => {
		e.preventDefault();
		depth = 0;
		zone.classList.remove("over");
		try {
			addFiles(await fromDrop(e.dataTransfer));
		} catch (err) {
			announce(`Could not read the dropped files: ${err.message}`);
		}
	});
	window.addEventListener("dragover", (e) => e.preventDefault());
	window.addEventListener("drop", (e) => e.preventDefault());

	$("clear-finished").addEventListener("click", clearFinished);
	$("forget-stored").addEventListener("click", () => {
		forgetAll();
		renderStored();
		announce("List of stored files forgotten; the files stay on the server");
		$("dropzone").focus();
	});

	renderStored();
	showUnfinished();
	updateOverall();
	showRules();
}

setup();
