// Tako's static server (vite preset): serves ./public on $HOST:$PORT with no dependencies.
// Runs under node, bun and deno. The edge already serves files with an extension from
// public/; this answers the rest: public/<path>, public/<path>/index.html,
// public/<path>.html, else public/index.html (single-page apps; 404 when there is none).
// Only GET and HEAD; a path that leaves public/ is refused with 400.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(fileURLToPath(new URL("./public", import.meta.url)));
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
  ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
  ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8", ".xml": "application/xml", ".wasm": "application/wasm",
  ".woff": "font/woff", ".woff2": "font/woff2", ".webmanifest": "application/manifest+json",
};

async function isFile(path) {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function locate(rawPath) {
  let path;
  try {
    path = decodeURIComponent(rawPath.split("?", 1)[0]);
  } catch {
    return { status: 400 };
  }
  const target = resolve(ROOT, "." + path);
  if (path.includes("\0") || (target !== ROOT && !target.startsWith(ROOT + sep))) {
    return { status: 400 };
  }
  for (const candidate of [target, join(target, "index.html"), target + ".html"]) {
    if (await isFile(candidate)) return { status: 200, file: candidate };
  }
  const index = join(ROOT, "index.html");
  if (!extname(target) && (await isFile(index))) return { status: 200, file: index };
  return { status: 404 };
}

const server = createServer(async (req, res) => {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  const found = await locate(req.url ?? "/");
  if (!found.file) {
    res.writeHead(found.status, { "content-type": "text/plain; charset=utf-8" });
    res.end(found.status === 404 ? "not found\n" : "bad request\n");
    return;
  }
  const info = await stat(found.file);
  res.writeHead(200, {
    "content-type": TYPES[extname(found.file).toLowerCase()] ?? "application/octet-stream",
    "content-length": info.size,
    "cache-control": "public, no-cache",
  });
  if (req.method === "HEAD") res.end();
  else createReadStream(found.file).pipe(res);
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
