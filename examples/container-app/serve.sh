#!/bin/sh
# Writes its page into /tmp (the root file system is read-only) and serves it on $PORT.
# SIGTERM stops httpd and exits 0, so a rolling update drains quickly.
mkdir -p /tmp/www
echo "$GREETING from $TAKO_APP_NAME ($TAKO_ENV, build $TAKO_BUILD)" > /tmp/www/index.html
echo "serving $TAKO_BUILD on $HOST:$PORT"
httpd -f -p "$HOST:$PORT" -h /tmp/www &
trap 'kill $!; exit 0' TERM
wait
