// Tako's Next.js starter (nextjs preset): Next's standalone server listens on HOSTNAME and
// PORT; Tako gives every instance HOST and PORT, so HOSTNAME is set from HOST (the
// loopback address the edge proxies to) before the standalone server starts.
process.env.HOSTNAME = process.env.HOST ?? "127.0.0.1";
await import("./.next/standalone/server.js");
