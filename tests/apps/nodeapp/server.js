// A tiny Node HTTP app used by the tests (no SDK: it serves on $HOST:$PORT).
// Endpoints: / (build and instance), /env (JSON of selected variables), /status (200),
// /crash (exits the process), /chatty (writes a lot to stdout), /slow?ms=N.
const http = require("http");

const ENV_NAMES = [
  "TAKO_ENV", "TAKO_BUILD", "TAKO_APP_NAME", "TAKO_INSTANCE", "HOST", "PORT",
  "NODE_ENV", "GREETING", "API_KEY", "SECRET_TOKEN",
];

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/status") {
    res.end("ok");
  } else if (url.pathname === "/env") {
    const data = {};
    for (const name of ENV_NAMES) data[name] = process.env[name] ?? null;
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify(data));
  } else if (url.pathname === "/crash") {
    res.end("bye");
    setTimeout(() => process.exit(3), 50);
  } else if (url.pathname === "/chatty") {
    for (let i = 0; i < 2000; i++) console.log(`chatty line ${i} ` + "x".repeat(100));
    res.end("chatted");
  } else if (url.pathname === "/slow") {
    const ms = Number(url.searchParams.get("ms") || "500");
    setTimeout(() => res.end("slow done"), ms);
  } else {
    const build = process.env.TAKO_BUILD || "?";
    const instance = process.env.TAKO_INSTANCE || "?";
    res.end(`hello from nodeapp build=${build} instance=${instance}\n`);
  }
});

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || "3000");
server.listen(port, host, () => console.log(`nodeapp listening on ${host}:${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
