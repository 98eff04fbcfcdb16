// A tiny Tako example app for Node: serves on $HOST:$PORT, no dependencies.
const http = require("node:http");

const server = http.createServer((req, res) => {
  let body;
  if (req.url === "/status") {
    body = "ok";
  } else if (req.url === "/env") {
    const keys = ["TAKO_ENV", "TAKO_BUILD", "TAKO_APP_NAME", "TAKO_INSTANCE", "NODE_ENV", "GREETING"];
    const env = Object.fromEntries(keys.map((k) => [k, process.env[k] ?? null]));
    for (const k of Object.keys(process.env)) if (k.startsWith("SECRET_")) env[k] = process.env[k];
    body = JSON.stringify(env);
  } else {
    body = `${process.env.GREETING ?? "Hello"} from ${process.env.TAKO_APP_NAME} (node, build ${process.env.TAKO_BUILD}, instance ${process.env.TAKO_INSTANCE})\n`;
  }
  console.log(`GET ${req.url}`);
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? "127.0.0.1", () => {
  console.log(`listening on ${process.env.HOST}:${process.env.PORT}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
