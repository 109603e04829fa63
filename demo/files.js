// Collecting files from the file pickers and from drops, each with the name
// to upload it under: its path relative to the folder that was picked or
// dropped (photos/a.png), else its own name.

// fromInput lists the files of an <input type=file>. A folder picker
// (webkitdirectory) gives each file its webkitRelativePath.
export function fromInput(input) {
	return [...input.files].map((file) => ({ file, name: file.webkitRelativePath || file.name }));
}

// fromDrop lists the files of a drop, walking into dropped folders. The
// entries must be taken from the DataTransfer during the drop event, before
// anything is awaited: the browser empties it afterwards.
export async function fromDrop(dataTransfer) {
	const items = [...(dataTransfer.items ?? [])].filter((i) => i.kind === "file");
	const entries = items.map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
	if (entries.length === 0) {
		// No entry API: plain files only.
		return [...dataTransfer.files].map((file) => ({ file, name: file.name }));
	}
	const out = [];
	for (const entry of entries) await walk(entry, out);
	return out;
}

// walk adds the files under a FileSystemEntry to out.
async function walk(entry, out) {
	if (entry.isFile) {
		const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
		out.push({ file, name: entry.fullPath.replace(/^\/+/, "") || file.name });
		return;
	}
	if (!entry.isDirectory) return;
	const reader = entry.createReader();
	// readEntries gives a folder's entries in batches, until an empty one.
	for (;;) {
		const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
		if (batch.length === 0) break;
		for (const child of batch) await walk(child, out);
	}
}
