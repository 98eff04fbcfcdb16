# syntax=docker/dockerfile:1
# Image of tako-server: the self-contained executable on debian:12-slim, no Python.
#
#   docker build -t tako-server .
#   docker compose up -d            (see docker-compose.yml and docs/install.md)
#
# Rules: the builder runs scripts/build-release on the same Debian release (bookworm,
# glibc 2.36) as the runtime, so the executable's libc matches. The runtime holds only
# the executable, its licence and the example settings; it runs as `tako` (uid 1000).
# Binding 80/443 as that user relies on net.ipv4.ip_unprivileged_port_start=0, which
# Docker (20.10+) sets in every container with its own network; docker-compose.yml sets
# it explicitly. No `setcap` on the executable: file capabilities put it in secure-
# execution mode, where the PyInstaller onefile child cannot read its parent's /proc
# entry and refuses to start. Apps run inside this container too: derive an image that
# adds their runtimes (node, bun, python3) when you deploy such apps here.

FROM python:3.11-slim-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY tako_common ./tako_common
COPY tako_server ./tako_server
COPY packaging ./packaging
COPY scripts/build-release ./scripts/build-release
RUN ./scripts/build-release --server-only \
 && mkdir /out \
 && tar -xzf dist/tako-server-linux-*.tar.gz -C /out \
 && /out/tako-server version

FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 tako \
 && useradd --uid 1000 --gid tako --home-dir /home/tako --create-home --shell /bin/sh tako \
 && install -d -m 0700 -o tako -g tako /opt/tako /run/tako
COPY --from=builder /out/tako-server /usr/local/bin/tako-server
COPY --from=builder /out/LICENSE /usr/local/share/doc/tako-server/LICENSE
COPY --from=builder /out/server-config.example.toml /usr/local/share/doc/tako-server/server-config.example.toml
USER tako
WORKDIR /opt/tako
VOLUME /opt/tako
EXPOSE 80 443
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tako-server", "run", "--data-dir", "/opt/tako", "--socket", "/var/run/tako/tako.sock"]
