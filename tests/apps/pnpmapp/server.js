// A Node app installed with pnpm (its lockfile is pnpm-lock.yaml): it needs the `ms` package
// from the npm registry, which the server installs with `pnpm install --prod`.
const http = require("http");
const ms = require("ms");

const server = http.createServer((req, res) => {
  res.end(`pnpmapp says ${ms(90000)} (build ${process.env.TAKO_BUILD || "?"})\n`);
});
server.listen(Number(process.env.PORT), process.env.HOST);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
