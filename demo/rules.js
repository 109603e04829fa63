// The upload rules of this site, and the page's own settings.
//
// RULES mirrors the reflex_upload block of Caddyfile.example, the config this
// page is served by: keep the two in step when either changes. The server
// enforces every rule (the page only shows them, and sends each file as the
// server expects); the largest file size is also read back from the server's
// tus discovery answer (OPTIONS /_upload/.uploads → Tus-Max-Size), so the
// page shows what the running server really allows.

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const RULES = Object.freeze({
	prefix: "/_upload", // reflex_upload's default prefix
	maxSize: 1 * GiB, // max_size 1GiB (per file)
	maxRequestSize: 2 * GiB, // max_request_size 2GiB (whole request body)
	maxFiles: 20, // max_files 20 (per request)
	accept: null, // no accept line: every type is accepted
	onConflict: "rename", // on_conflict rename: a second a.png is stored as "a (1).png"
});

// How this page uploads: not server rules, only its own choices.
export const SETTINGS = Object.freeze({
	tusChunkSize: 8 * MiB, // size of one tus PATCH request
	autoTusOver: 20 * MiB, // files larger than this are sent resumable even with the switch off
	parallel: 3, // uploads at once (the browser allows 6 connections to a host; polls need one)
	pollInterval: 500, // ms between two reads of the server's progress endpoint
});

// The endpoints of reflex_upload under the prefix (see the README's "URL space").
export const ENDPOINTS = Object.freeze({
	upload: RULES.prefix, // POST: standard (multipart) upload
	tus: `${RULES.prefix}/.uploads`, // OPTIONS: tus discovery; POST: tus creation
	progress: (id) => `${RULES.prefix}/.uploads/${encodeURIComponent(id)}`, // GET progress, DELETE cancel
});

// readServerRules asks the server for its largest file size (tus discovery).
// It answers the rules with maxSize replaced, and maxSizeFrom saying where
// the value came from ("server" or "page").
export async function readServerRules() {
	try {
		const res = await fetch(ENDPOINTS.tus, { method: "OPTIONS" });
		const max = Number.parseInt(res.headers.get("Tus-Max-Size") ?? "", 10);
		if (res.ok && Number.isSafeInteger(max) && max > 0) {
			return { ...RULES, maxSize: max, maxSizeFrom: "server" };
		}
	} catch {
		// Offline or another server: fall back to the page's copy.
	}
	return { ...RULES, maxSizeFrom: "page" };
}

// formatBytes writes a byte count with binary units, as the rules are given.
export function formatBytes(n) {
	if (!Number.isFinite(n)) return "?";
	if (n < KiB) return `${n} B`;
	const units = ["KiB", "MiB", "GiB", "TiB"];
	let v = n / KiB;
	let i = 0;
	while (v >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	const digits = v >= 100 || Number.isInteger(v) ? 0 : 1;
	return `${v.toFixed(digits)} ${units[i]}`;
}
