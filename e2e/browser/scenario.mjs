// Drives Debian's Chromium through one scenario on the demo page, with
// playwright-core (no browser download: the executable is given). Run by
// browser_test.go:
//
//   node scenario.mjs '<json>'
//
// where json is {"scenario": NAME, "base": URL, "out": DIR, "chromium": PATH, ...}
// with the scenario's own arguments. It prints one JSON line on stdout:
// {"ok": true, ...the scenario's findings} or {"ok": false, "error": "..."}
// (exit status 1), and on stderr every browser console message, page error,
// failed request and upload request, for the Go test to show on failure.
// Every wait is bounded.

import { chromium } from "playwright-core";
import path from "node:path";
import fs from "node:fs";

const args = JSON.parse(process.argv[2] ?? "{}");
const started = Date.now();
const log = (...a) => console.error(`[${((Date.now() - started) / 1000).toFixed(2)}s]`, ...a);

const WAIT = 60_000; // the longest single wait
const MiB = 1 << 20;

// ---------------------------------------------------------------------------
// Browser and page.

async function launch() {
	return chromium.launch({
		executablePath: args.chromium,
		args: [
			"--headless=new",
			"--no-sandbox",
			"--disable-gpu",
			"--disable-quic",
			"--no-first-run",
			"--disable-background-networking",
			"--disable-component-update",
			"--disable-sync",
		],
		timeout: 30_000,
	});
}

// openPage opens the demo page in a fresh context and logs what the page does.
async function openPage(browser, viewport = { width: 1280, height: 800 }) {
	const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
	context.setDefaultTimeout(WAIT);
	const page = await context.newPage();
	page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
	page.on("pageerror", (e) => {
		log(`pageerror: ${e.stack || e}`);
		pageErrors.push(String(e));
	});
	page.on("dialog", async (d) => {
		log(`dialog (${d.type()}): ${d.message()}`);
		dialogs.push(d.message());
		await d.dismiss().catch(() => {});
	});
	// File choosers are intercepted from the start: a "filechooser" listener
	// added just before the key press that opens one may be switched on too
	// late, and the chooser then never shows up.
	page.on("filechooser", (fc) => fileChoosers.push(fc));
	page.on("requestfailed", (r) => log(`requestfailed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
	page.on("request", (r) => {
		if (r.url().includes("/_upload") && r.method() !== "GET") {
			requests.push({ method: r.method(), url: r.url(), headers: r.headers() });
			log(`request: ${r.method()} ${r.url()} ${JSON.stringify(pick(r.headers(), "x-progress-id", "upload-offset", "upload-length"))}`);
		}
	});
	page.on("response", (r) => {
		const req = r.request();
		if (req.url().includes("/_upload") && req.method() !== "GET") {
			responses.push({ method: req.method(), url: req.url(), status: r.status(), headers: r.headers() });
			log(`response: ${r.status()} ${req.method()} ${req.url()} ${JSON.stringify(pick(r.headers(), "location", "upload-offset"))}`);
		}
	});
	await page.goto(args.base, { waitUntil: "load", timeout: 30_000 });
	// The page has read the rules from the server (OPTIONS → Tus-Max-Size).
	await page.locator("#rule-max-size[data-from]").waitFor({ timeout: 15_000 });
	return page;
}

const pageErrors = [];
const fileChoosers = [];
const dialogs = [];
const requests = [];
const responses = [];

function pick(obj, ...keys) {
	const out = {};
	for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
	return out;
}

// nextFileChooser waits for the page to open a file chooser.
async function nextFileChooser(timeout) {
	const end = Date.now() + timeout;
	while (fileChoosers.length === 0) {
		if (Date.now() > end) throw new Error(`no file chooser opened within ${timeout} ms`);
		await new Promise((r) => setTimeout(r, 50));
	}
	return fileChoosers.shift();
}

// throttle limits the page's upload speed with the DevTools protocol.
async function throttle(page, bytesPerSecond) {
	const cdp = await page.context().newCDPSession(page);
	await cdp.send("Network.enable");
	await cdp.send("Network.emulateNetworkConditions", {
		offline: false,
		latency: 0,
		downloadThroughput: -1,
		uploadThroughput: bytesPerSecond,
	});
	return cdp;
}

async function unthrottle(cdp) {
	await cdp.send("Network.emulateNetworkConditions", {
		offline: false,
		latency: 0,
		downloadThroughput: -1,
		uploadThroughput: -1,
	});
}

// item is the <li> of an upload, found by the name it is sent under (the
// newest, on top, when the name was sent twice).
function item(page, name) {
	return page.locator(`#uploads li.upload[data-name="${cssString(name)}"]`).first();
}

function cssString(s) {
	return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
}

// waitState waits until the upload of `name` is in one of the states.
async function waitState(page, name, states, timeout = WAIT) {
	const li = item(page, name);
	await li.waitFor({ timeout });
	await page.waitForFunction(
		({ sel, states }) => {
			const el = document.querySelector(sel);
			return el && states.includes(el.dataset.state);
		},
		{ sel: `#uploads li.upload[data-name="${cssString(name)}"]`, states },
		{ timeout, polling: 100 },
	);
	return describe(page, name);
}

// describe reads what the page shows for one upload.
async function describe(page, name) {
	return item(page, name).evaluate((li) => {
		const bar = li.querySelector("progress");
		const link = li.querySelector(".detail a");
		const labelId = bar.getAttribute("aria-labelledby");
		return {
			name: li.dataset.name,
			state: li.dataset.state,
			stateText: li.querySelector(".state").textContent,
			detail: li.querySelector(".detail").textContent,
			code: li.querySelector(".code")?.textContent ?? null,
			badge: li.querySelector(".badge").textContent,
			value: bar.value,
			max: bar.max,
			label: labelId ? document.getElementById(labelId)?.textContent : null,
			storedPath: link?.textContent ?? null,
			url: link?.getAttribute("href") ?? null,
		};
	});
}

// announced waits (up to 5 s) until the live region says something that
// matches re, and answers what it says.
async function announced(page, re) {
	const said = await page
		.waitForFunction(
			(src) => {
				const text = document.getElementById("announcer").textContent;
				return new RegExp(src).test(text) && text;
			},
			re.source,
			{ timeout: 5_000, polling: 50 },
		)
		.then((h) => h.jsonValue())
		.catch(() => null);
	return said ?? page.locator("#announcer").textContent();
}

async function uploadsText(page) {
	return page.locator("#uploads").innerText().catch(() => "(no page)");
}

// ---------------------------------------------------------------------------
// Scenarios. Each answers its findings; a failed check throws.

const scenarios = {
	// select: files chosen with the keyboard (Tab to the drop zone, Enter
	// opens the picker) and a folder through the folder input; every file
	// ends done with a full progress bar, and the stored list keeps them.
	async select(browser) {
		const page = await openPage(browser);
		const found = {};

		// Keyboard: the drop zone is the first stop and opens the picker.
		await page.locator("body").focus();
		await page.keyboard.press("Tab");
		found.firstFocus = await page.evaluate(() => document.activeElement?.id);
		found.focusOutline = await page.evaluate(() => getComputedStyle(document.activeElement).boxShadow);
		await page.keyboard.press("Enter");
		await (await nextFileChooser(10_000)).setFiles(args.files);
		await page.setInputFiles("#folder-input", args.folder);
		// A drop on the drop zone. A page cannot make a drop with real
		// folder entries, so this one carries a plain file (the fallback
		// path of files.js); dropped folders are walked with webkitGetAsEntry.
		const dt = await page.evaluateHandle(({ name, text }) => {
			const dt = new DataTransfer();
			dt.items.add(new File([text], name, { type: "text/plain" }));
			return dt;
		}, args.dropped);
		await page.dispatchEvent("#dropzone", "dragenter", { dataTransfer: dt });
		await page.dispatchEvent("#dropzone", "drop", { dataTransfer: dt });

		found.items = [];
		for (const name of args.expect) found.items.push(await waitState(page, name, ["done", "error", "cancelled"]));
		found.overall = await page.evaluate(() => {
			const bar = document.getElementById("overall");
			return { value: bar.value, max: bar.max, label: document.getElementById("overall-label").textContent };
		});
		found.announcer = await page.locator("#announcer").textContent();
		found.scriptInjected = await page.evaluate(() => document.querySelectorAll("#uploads img, #stored .stored-name img, #stored .stored-name *").length);

		// Thumbnails: the stored images show, although served as attachments.
		await page.waitForFunction(() => [...document.querySelectorAll("#stored img.thumb")].every((i) => i.complete), null, {
			timeout: 15_000,
		});
		found.thumbnails = await page.$$eval("#stored img.thumb", (imgs) =>
			imgs.map((i) => ({ src: i.getAttribute("src"), width: i.naturalWidth, height: i.naturalHeight })),
		);

		// The list of stored files survives a reload (localStorage).
		await page.reload({ waitUntil: "load" });
		found.storedAfterReload = await page.$$eval("#stored li.stored-file", (lis) => lis.map((li) => li.dataset.path));
		return found;
	},

	// reject: a file the server refuses (its name is reserved), sent both
	// ways; the page shows the server's code.
	async reject(browser) {
		const page = await openPage(browser);
		const file = { name: args.name, mimeType: "text/plain", buffer: Buffer.from("refused\n") };
		await page.setInputFiles("#file-input", file);
		const standard = await waitState(page, args.name, ["done", "error", "cancelled"]);
		await page.locator("#tus-switch").check();
		await page.setInputFiles("#file-input", file);
		const tus = await waitState(page, args.name, ["done", "error", "cancelled"]);
		const answers = responses.filter((r) => r.method === "POST").map((r) => r.status);
		return { standard, tus, answers, announcer: await announced(page, /invalid-filename/) };
	},

	// cancel: an upload throttled to args.rate bytes/s (standard, or
	// resumable with args.tus) is cancelled mid-way with its Cancel button.
	async cancel(browser) {
		const page = await openPage(browser);
		if (args.tus) await page.locator("#tus-switch").check();
		await throttle(page, args.rate);
		const name = path.basename(args.file);
		await page.setInputFiles("#file-input", args.file);
		await waitState(page, name, ["uploading"], 15_000);
		// Mid-way: the browser has sent some and the server reports it.
		await page.waitForFunction(
			({ sel, min }) => {
				const li = document.querySelector(sel);
				return li && li.querySelector("progress").value >= min && /server: uploading/.test(li.textContent);
			},
			{ sel: `#uploads li.upload[data-name="${cssString(name)}"]`, min: args.minSent },
			{ timeout: 30_000, polling: 100 },
		);
		const before = await describe(page, name);
		// The cancel button, by keyboard: focus it and press Enter.
		await item(page, name).getByRole("button", { name: `Cancel ${name}` }).focus();
		const del = page.waitForResponse((r) => r.request().method() === "DELETE", { timeout: 10_000 });
		await page.keyboard.press("Enter");
		const delStatus = (await del).status();
		const after = await waitState(page, name, ["cancelled", "done", "error"], 20_000);
		const post = requests.find((r) => r.method === "POST");
		const created = responses.find((r) => r.method === "POST" && r.status === 201);
		return {
			uploadURL: created?.headers.location ?? null,
			before,
			after,
			deleteStatus: delStatus,
			uploadID: post?.headers["x-progress-id"] ?? null,
			announcer: await announced(page, /cancelled/),
		};
	},

	// tus: a resumable upload with the switch on. The page is reloaded after
	// the first chunk was stored, and the same file added again must resume
	// (HEAD, then PATCH from the server's offset), not start over.
	async tus(browser) {
		const page = await openPage(browser);
		const name = path.basename(args.file);
		await page.locator("#tus-switch").focus();
		await page.keyboard.press("Space"); // the switch, by keyboard
		const switchOn = await page.locator("#tus-switch").isChecked();
		const cdp = await throttle(page, args.rate);
		const firstChunk = page.waitForResponse((r) => r.request().method() === "PATCH" && r.status() === 204, {
			timeout: 60_000,
		});
		await page.setInputFiles("#file-input", args.file);
		const badge = await item(page, name).locator(".badge").textContent();
		const first = await firstChunk;
		const offsetBeforeReload = Number(first.headers()["upload-offset"]);
		await page.waitForTimeout(300); // the next chunk is in flight
		log(`reloading the page after offset ${offsetBeforeReload}`);
		await page.reload({ waitUntil: "load" });
		await page.locator("#rule-max-size[data-from]").waitFor({ timeout: 15_000 });
		const unfinished = await page.locator("#unfinished").textContent();
		await unthrottle(cdp);
		await page.locator("#tus-switch").check();
		const mark = requests.length;
		await page.setInputFiles("#file-input", args.file);
		const done = await waitState(page, name, ["done", "error", "cancelled"], 120_000);
		const after = requests.slice(mark);
		const patches = after.filter((r) => r.method === "PATCH");
		return {
			switchOn,
			badge,
			offsetBeforeReload,
			unfinished,
			done,
			creations: requests.filter((r) => r.method === "POST").length,
			headsAfterReload: after.filter((r) => r.method === "HEAD").length,
			firstPatchOffsetAfterReload: patches.length ? Number(patches[0].headers["upload-offset"]) : null,
			patchesAfterReload: patches.length,
			resumedText: done.detail,
			uploadURL: responses.find((r) => r.method === "POST")?.headers.location ?? null,
			// The page's tus client is the vendored stock tus-js-client.
			stockClient: await page.evaluate(
				() =>
					document.querySelector('script[src="vendor/tus-js-client/tus.min.js"]') !== null &&
					typeof window.tus?.Upload === "function" &&
					window.tus.isSupported === true,
			),
		};
	},

	// screenshots: the page with stored images, a finished and a refused
	// upload and one in progress, at 1280x800 and 390x844.
	async screenshots(browser) {
		const page = await openPage(browser, { width: 1280, height: 800 });
		// An earlier visit stored some files; this one shows them, and new uploads.
		await page.setInputFiles("#file-input", args.files);
		for (const f of args.files) await waitState(page, path.basename(f), ["done", "error"]);
		await page.reload({ waitUntil: "load" });
		await page.locator("#rule-max-size[data-from]").waitFor({ timeout: 15_000 });
		await page.setInputFiles("#file-input", args.later);
		for (const f of args.later) await waitState(page, path.basename(f), ["done", "error"]);
		await page.setInputFiles("#file-input", { name: ".uploads", mimeType: "text/plain", buffer: Buffer.from("x") });
		await waitState(page, ".uploads", ["error"]);
		await throttle(page, args.rate);
		const big = path.basename(args.big);
		await page.setInputFiles("#file-input", args.big);
		await page.waitForFunction(
			({ sel, min }) => {
				const li = document.querySelector(sel);
				return li && li.querySelector("progress").value >= min && /server: uploading/.test(li.textContent);
			},
			{ sel: `#uploads li.upload[data-name="${cssString(big)}"]`, min: args.minSent },
			{ timeout: 30_000, polling: 100 },
		);
		await page.waitForFunction(() => [...document.querySelectorAll("#stored img.thumb")].every((i) => i.complete), null, {
			timeout: 15_000,
		});
		await page.mouse.move(0, 0);
		const desktop = path.join(args.out, "desktop-1280x800.png");
		await page.screenshot({ path: desktop });
		await page.setViewportSize({ width: 390, height: 844 });
		await page.waitForTimeout(200);
		const phone = path.join(args.out, "phone-390x844.png");
		await page.screenshot({ path: phone });
		// Nothing may stick out sideways on the phone.
		const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
		// Leave no upload behind: cancel the one in progress.
		await item(page, big).getByRole("button", { name: `Cancel ${big}` }).click();
		await waitState(page, big, ["cancelled", "done", "error"], 20_000);
		return { desktop, phone, phoneOverflow: overflow };
	},
};

// ---------------------------------------------------------------------------

async function main() {
	const scenario = scenarios[args.scenario];
	if (!scenario) throw new Error(`unknown scenario ${JSON.stringify(args.scenario)}`);
	const browser = await launch();
	log(`chromium ${browser.version()}, scenario ${args.scenario}`);
	let page = null;
	browser.on("disconnected", () => log("browser disconnected"));
	try {
		const deadline = new Promise((_, reject) =>
			setTimeout(() => reject(new Error(`scenario ${args.scenario} took over ${args.timeoutMs} ms`)), args.timeoutMs).unref(),
		);
		const result = await Promise.race([scenario(browser), deadline]);
		result.pageErrors = pageErrors;
		result.dialogs = dialogs;
		process.stdout.write(JSON.stringify({ ok: true, ...result }) + "\n");
	} catch (err) {
		for (const ctx of browser.contexts()) for (const p of ctx.pages()) page = p;
		if (page) {
			log(`uploads shown:\n${await uploadsText(page)}`);
			const shot = path.join(args.out, `failure-${args.scenario}.png`);
			await page.screenshot({ path: shot, timeout: 5_000 }).then(
				() => log(`screenshot of the failure: ${shot}`),
				() => {},
			);
		}
		process.stdout.write(JSON.stringify({ ok: false, error: String(err?.stack || err), pageErrors, dialogs }) + "\n");
		process.exitCode = 1;
	} finally {
		await browser.close().catch(() => {});
	}
}

fs.mkdirSync(args.out ?? ".", { recursive: true });
await main();
