// A plain Node HTTP app for supervisor tests: GET /env shows HOST, PORT and TAKO_* variables.
const http = require("http");
const server = http.createServer((req, res) => {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("TAKO_") || k === "HOST" || k === "PORT" || k === "APP_VERSION") env[k] = v;
  }
  env.pid = process.pid;
  const body = JSON.stringify(env);
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
});
server.listen(Number(process.env.PORT), process.env.HOST, () => {
  console.log(`node app listening on ${process.env.PORT}`);
});
