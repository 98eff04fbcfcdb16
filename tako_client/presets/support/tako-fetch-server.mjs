// Tako's fetch-handler server (tanstack-start preset): serves a module whose default export
// has a `fetch(request)` method (default dist/server/server.js, or the first argument) on
// $HOST:$PORT with node:http. No dependencies; runs under node, bun and deno.
import { createServer } from "node:http";
import { resolve } from "node:path";
import { Readable } from "node:stream";
import { pathToFileURL } from "node:url";

const entry = process.argv[2] ?? "dist/server/server.js";
const loaded = await import(pathToFileURL(resolve(entry)).href);
const handler = typeof loaded.default?.fetch === "function" ? loaded.default : loaded;
if (typeof handler.fetch !== "function") {
  console.error(`${entry} has no fetch handler (export default { fetch })`);
  process.exit(1);
}

function toRequest(req) {
  const proto = req.headers["x-forwarded-proto"] ?? "http";
  const url = new URL(req.url ?? "/", `${proto}://${req.headers.host ?? "localhost"}`);
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined) headers.append(name, one);
    }
  }
  const init = { method: req.method, headers };
  if (req.method !== "GET" && req.method !== "HEAD") {
    init.body = Readable.toWeb(req);
    init.duplex = "half";
  }
  return new Request(url, init);
}

async function respond(req, res) {
  let response;
  try {
    response = await handler.fetch(toRequest(req));
  } catch (error) {
    console.error(error);
    res.writeHead(500, { "content-type": "text/plain" }).end("internal error\n");
    return;
  }
  const headers = [];
  for (const [name, value] of response.headers) {
    if (name !== "set-cookie") headers.push(name, value);
  }
  for (const cookie of response.headers.getSetCookie?.() ?? []) headers.push("set-cookie", cookie);
  if (response.statusText) res.writeHead(response.status, response.statusText, headers);
  else res.writeHead(response.status, headers);
  if (!response.body || req.method === "HEAD") res.end();
  else Readable.fromWeb(response.body).pipe(res);
}

const server = createServer((req, res) => void respond(req, res));
server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
