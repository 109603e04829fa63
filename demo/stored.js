// The list of files this browser stored on the server, kept in
// localStorage: the server has no listing endpoint (by design, since anyone
// who can list can download), so the page remembers what it uploaded.

const KEY = "reflex-upload-demo:stored";
const MAX = 200; // entries kept, newest first

// loadStored answers the remembered files, newest first:
// [{path, url, size, content_type, sha256, at}].
export function loadStored() {
	try {
		const list = JSON.parse(localStorage.getItem(KEY) ?? "[]");
		return Array.isArray(list) ? list.filter((f) => f && typeof f.url === "string" && f.url.startsWith("/")) : [];
	} catch {
		return [];
	}
}

// remember adds files from an upload's answer (the server's "files").
export function remember(files) {
	const now = new Date().toISOString();
	const fresh = files.map((f) => ({
		path: f.path,
		url: f.url,
		size: f.size,
		content_type: f.content_type,
		sha256: f.sha256,
		at: now,
	}));
	const list = [...fresh, ...loadStored().filter((old) => !fresh.some((f) => f.url === old.url))];
	save(list.slice(0, MAX));
}

// forgetAll empties the list (the files stay on the server).
export function forgetAll() {
	localStorage.removeItem(KEY);
}

function save(list) {
	try {
		localStorage.setItem(KEY, JSON.stringify(list));
	} catch {
		// Storage full or disabled: the list lasts for this page view only.
	}
}
