#!/bin/sh
# Installs or upgrades tako-server on a Linux host (run as root). Safe to re-run.
#
# What it does, in order (every step is idempotent):
#   1. checks: root, Linux, arch (x86_64|aarch64) and libc (glibc|musl) of this host;
#   2. gets the release tarball tako-server-linux-<arch>-<libc>.tar.gz and VERIFIES ITS
#      SHA256 before anything else; a missing checksum or a mismatch stops here, changing
#      nothing on the host;
#   3. unpacks it to a temp dir, checks the executable runs (`tako-server version`), and
#      installs it atomically to /usr/local/bin/tako-server (temp file + mv);
#   4. creates the system group and user `tako` (home /home/tako, shell /bin/sh, no
#      password: SSH key login only) and adds TAKO_SSH_PUBKEY to its authorized_keys;
#   5. creates /opt/tako and /var/run/tako (tako:tako, 0700) and writes
#      /opt/tako/server-config.toml from the example only when it does not exist;
#   6. with systemd: installs /etc/systemd/system/tako-server.service, enables it and
#      starts it, or reloads it when already active (zero-downtime takeover on SIGHUP);
#      without systemd (containers, test hosts): starts tako-server as `tako` in the
#      background (pidfile /var/run/tako/tako-server.pid, log /var/log/tako-server.log),
#      with CAP_NET_BIND_SERVICE as an ambient capability, or sends SIGHUP to the running one;
#   7. container releases (docs/containers.md): installs Podman when missing (apt-get) and
#      serves its Docker-compatible API as root on /var/run/tako/podman.sock, group `tako`,
#      mode 0660 (systemd: tako-podman.socket + tako-podman.service, socket-activated;
#      without systemd: a background `podman system service`, pidfile
#      /var/run/tako/podman-service.pid, log /var/log/tako-podman.log).
#      Rootful, not rootless: memory and pids limits need cgroups that rootless Podman only
#      gets on cgroup v2 with systemd delegation; see docs/containers.md for the trade-off.
#
# Variables:
#   TAKO_SERVER_ARTIFACT  path of a local release tarball; its checksum comes from
#                         TAKO_SERVER_SHA256 or the file "<tarball>.sha256" beside it
#   TAKO_SERVER_URL       URL of the release tarball (downloaded with curl); its checksum
#                         comes from TAKO_SERVER_SHA256 or "$TAKO_SERVER_URL.sha256"
#   TAKO_DOWNLOAD_BASE_URL  used when neither of the above is set: the tarball URL is
#                         "$TAKO_DOWNLOAD_BASE_URL/tako-server-linux-<arch>-<libc>.tar.gz"
#   TAKO_SERVER_SHA256    expected SHA256 (64 hex digits) of the tarball
#   TAKO_SSH_PUBKEY       public key line(s) allowed to log in as `tako` (deploys use it)
#   TAKO_RESTART=1        without systemd: restart the running server instead of SIGHUP;
#                         with systemd: `systemctl restart` instead of `reload`
#   TAKO_NO_SYSTEMD=1     behave as if systemd were not running (containers, tests)
#   TAKO_CONTAINERS=0     skip step 7 (no Podman: the host runs native releases only)
set -eu

BIN=/usr/local/bin/tako-server
DATA_DIR=/opt/tako
RUN_DIR=/var/run/tako
SOCKET=$RUN_DIR/tako.sock
PIDFILE=$RUN_DIR/tako-server.pid
LOGFILE=/var/log/tako-server.log
UNIT=/etc/systemd/system/tako-server.service
TAKO_HOME_DIR=/home/tako
SAFE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

TAKO_SERVER_ARTIFACT=${TAKO_SERVER_ARTIFACT:-}
TAKO_SERVER_URL=${TAKO_SERVER_URL:-}
TAKO_DOWNLOAD_BASE_URL=${TAKO_DOWNLOAD_BASE_URL:-}
TAKO_SERVER_SHA256=${TAKO_SERVER_SHA256:-}
TAKO_SSH_PUBKEY=${TAKO_SSH_PUBKEY:-}
TAKO_RESTART=${TAKO_RESTART:-0}
TAKO_NO_SYSTEMD=${TAKO_NO_SYSTEMD:-0}
TAKO_CONTAINERS=${TAKO_CONTAINERS:-1}
PODMAN_SOCKET=$RUN_DIR/podman.sock
PODMAN_PIDFILE=$RUN_DIR/podman-service.pid
PODMAN_UNIT=/etc/systemd/system/tako-podman

say() { echo "install-server: $*"; }
die() {
  echo "install-server: error: $*" >&2
  exit 1
}

work=
cleanup() { if [ -n "$work" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

check_host() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo -E sh $0)"
  [ "$(uname -s)" = Linux ] || die "tako-server runs on Linux only, this is $(uname -s)"
  case "$(uname -m)" in
    x86_64 | amd64) ARCH=x86_64 ;;
    aarch64 | arm64) ARCH=aarch64 ;;
    *) die "unsupported CPU '$(uname -m)': tako-server is built for x86_64 and aarch64" ;;
  esac
  if ldd --version 2>&1 | grep -qi musl || ls /lib/ld-musl-* >/dev/null 2>&1; then
    LIBC=musl
  else
    LIBC=glibc
  fi
  TARGET="linux-$ARCH-$LIBC"
  for tool in tar gzip sha256sum install mktemp; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required (install coreutils/tar/gzip)"
  done
}

# Refuse a tarball whose name says it was built for another target.
check_artifact_name() {
  case "$(basename "$1")" in
    tako-server-linux-*-*.tar.gz)
      [ "$(basename "$1")" = "tako-server-$TARGET.tar.gz" ] ||
        die "$(basename "$1") is not for this host: expected tako-server-$TARGET.tar.gz"
      ;;
  esac
}

# Print the checksum from a `sha256sum` file (first field), refusing anything else.
read_checksum_file() {
  sum=$(awk 'NR == 1 { print $1 }' "$1")
  echo "$sum"
}

is_sha256() {
  case "$1" in
    "" | *[!0-9a-fA-F]*) return 1 ;;
  esac
  [ "${#1}" -eq 64 ]
}

download() { # url dest
  command -v curl >/dev/null 2>&1 || die "curl is required to download $1 (apt-get install curl)"
  curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1" || die "download failed: $1"
}

# Sets TARBALL (a file in $work) and EXPECTED (its checksum); changes nothing on the host.
fetch_artifact() {
  expected=$TAKO_SERVER_SHA256
  if [ -n "$TAKO_SERVER_ARTIFACT" ]; then
    [ -f "$TAKO_SERVER_ARTIFACT" ] || die "TAKO_SERVER_ARTIFACT=$TAKO_SERVER_ARTIFACT: no such file"
    check_artifact_name "$TAKO_SERVER_ARTIFACT"
    if [ -z "$expected" ]; then
      [ -f "$TAKO_SERVER_ARTIFACT.sha256" ] ||
        die "no checksum for $TAKO_SERVER_ARTIFACT: put $TAKO_SERVER_ARTIFACT.sha256 beside it or set TAKO_SERVER_SHA256"
      expected=$(read_checksum_file "$TAKO_SERVER_ARTIFACT.sha256")
    fi
    TARBALL=$work/artifact.tar.gz
    cp "$TAKO_SERVER_ARTIFACT" "$TARBALL"
  else
    url=$TAKO_SERVER_URL
    if [ -z "$url" ]; then
      [ -n "$TAKO_DOWNLOAD_BASE_URL" ] ||
        die "nothing to install: set TAKO_SERVER_ARTIFACT (local tarball), TAKO_SERVER_URL or TAKO_DOWNLOAD_BASE_URL"
      url="${TAKO_DOWNLOAD_BASE_URL%/}/tako-server-$TARGET.tar.gz"
    fi
    check_artifact_name "${url%%\?*}"
    TARBALL=$work/artifact.tar.gz
    say "downloading $url"
    download "$url" "$TARBALL"
    if [ -z "$expected" ]; then
      download "$url.sha256" "$work/artifact.sha256"
      expected=$(read_checksum_file "$work/artifact.sha256")
    fi
  fi
  is_sha256 "$expected" || die "checksum '$expected' is not a SHA256 (64 hex digits)"
  EXPECTED=$(echo "$expected" | tr 'A-F' 'a-f')
}

verify_artifact() {
  actual=$(sha256sum "$TARBALL" | awk '{ print $1 }')
  [ "$actual" = "$EXPECTED" ] ||
    die "checksum mismatch: expected $EXPECTED, got $actual; nothing was changed"
  say "checksum verified ($EXPECTED)"
}

unpack_artifact() {
  mkdir "$work/x"
  tar -xzf "$TARBALL" -C "$work/x" || die "the artifact is not a valid .tar.gz"
  [ -f "$work/x/tako-server" ] || die "the artifact has no tako-server executable at its top level"
}

# Install beside the old binary, check the new one runs here, then swap atomically.
install_binary() {
  mkdir -p "$(dirname "$BIN")"
  install -m 0755 -o root -g root "$work/x/tako-server" "$BIN.new"
  if ! NEW_VERSION=$("$BIN.new" version 2>&1); then
    rm -f "$BIN.new"
    die "the new tako-server does not run on this host ($TARGET): $NEW_VERSION"
  fi
  case "$NEW_VERSION" in
    "tako-server "*) ;;
    *)
      rm -f "$BIN.new"
      die "unexpected output of 'tako-server version': $NEW_VERSION"
      ;;
  esac
  # No file capabilities (setcap) on purpose: they put the process in secure-execution
  # mode, where the PyInstaller onefile child cannot read its parent's /proc entry and
  # refuses to start. CAP_NET_BIND_SERVICE is given as an ambient capability instead.
  mv -f "$BIN.new" "$BIN"
  say "installed $BIN ($NEW_VERSION)"
}

ensure_user() {
  if ! getent group tako >/dev/null 2>&1; then
    groupadd --system tako || die "cannot create group tako"
  fi
  if ! id -u tako >/dev/null 2>&1; then
    useradd --system --gid tako --home-dir "$TAKO_HOME_DIR" --create-home --shell /bin/sh \
      --comment "Tako deploys" tako || die "cannot create user tako"
    say "created user tako"
  fi
  # No usable password but not "locked" ('!'): sshd without PAM refuses even key logins
  # for locked accounts, so '*' is what makes this account key-login-only.
  usermod -p '*' tako
  mkdir -p "$TAKO_HOME_DIR"
  chown tako:tako "$TAKO_HOME_DIR"
  chmod 0750 "$TAKO_HOME_DIR"
}

ensure_authorized_keys() {
  [ -n "$TAKO_SSH_PUBKEY" ] || {
    say "TAKO_SSH_PUBKEY not set: leaving $TAKO_HOME_DIR/.ssh/authorized_keys as it is"
    return 0
  }
  dir=$TAKO_HOME_DIR/.ssh
  keys=$dir/authorized_keys
  install -d -m 0700 -o tako -g tako "$dir"
  [ -f "$keys" ] || install -m 0600 -o tako -g tako /dev/null "$keys"
  printf '%s\n' "$TAKO_SSH_PUBKEY" | tr -d '\r' | while IFS= read -r line; do
    [ -n "$line" ] || continue
    grep -qxF -- "$line" "$keys" || printf '%s\n' "$line" >>"$keys"
  done
  chown tako:tako "$keys"
  chmod 0600 "$keys"
}

ensure_dirs() {
  install -d -m 0700 -o tako -g tako "$DATA_DIR"
  chown tako:tako "$DATA_DIR"
  chmod 0700 "$DATA_DIR"
  install -d -m 0700 -o tako -g tako "$RUN_DIR"
  chown tako:tako "$RUN_DIR"
  chmod 0700 "$RUN_DIR"
  config=$DATA_DIR/server-config.toml
  if [ ! -e "$config" ] && [ -f "$work/x/server-config.example.toml" ]; then
    install -m 0600 -o tako -g tako "$work/x/server-config.example.toml" "$config"
    say "wrote $config (edit it, then: systemctl reload tako-server)"
  fi
}

has_systemd() {
  [ "$TAKO_NO_SYSTEMD" != 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

write_unit() {
  cat <<'UNIT'
# tako-server: reverse proxy, TLS/ACME and app supervisor of one Tako host.
# Installed by scripts/install-server.sh to /etc/systemd/system/tako-server.service; the
# installer embeds a copy of this file (tests/integration/test_packaging.py checks they match).
#
# Notes for operators:
# - Type=notify: tako-server sends READY=1 once its listeners and control socket are up.
#   NotifyAccess=all is required, not main: the PyInstaller executable runs the daemon in a
#   child of its bootloader, and on `systemctl reload` (SIGHUP) a NEW process takes over
#   and announces itself with MAINPID=<pid> + READY=1 before the old one exits; with
#   NotifyAccess=main systemd would drop both messages.
# - KillMode=process + ExecStop=tako-server prepare-stop: systemd signals the daemon only.
#   On `systemctl restart` prepare-stop sees the queued restart job and leaves a marker:
#   the daemon exits leaving the app instances running and the next daemon adopts them.
#   On `systemctl stop` there is no marker: the daemon stops every instance (drain,
#   SIGTERM, SIGKILL) before it exits. A `kill -9` of the daemon leaves them running too;
#   Restart=always starts a daemon that adopts them (docs/upgrade.md).
# - Hardening keeps apps working: they run as `tako` inside this unit and may need to
#   write $HOME (/home/tako: npm/bun/pip caches) and run JITs, so there is no
#   ProtectHome, no MemoryDenyWriteExecute and no system call filter.

[Unit]
Description=Tako server (reverse proxy, TLS and app supervisor)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=all
User=tako
Group=tako
WorkingDirectory=/opt/tako
ExecStart=/usr/local/bin/tako-server run --data-dir /opt/tako --socket /var/run/tako/tako.sock
ExecReload=/bin/kill -HUP $MAINPID
ExecStop=/usr/local/bin/tako-server prepare-stop --data-dir /opt/tako
Restart=always
RestartSec=1
KillMode=process
TimeoutStopSec=30min
RuntimeDirectory=tako
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
LimitNOFILE=1048576
TasksMax=infinity

AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
ProtectSystem=full
ReadWritePaths=/opt/tako
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
UNIT
}

run_with_systemd() {
  write_unit >"$UNIT.new"
  chmod 0644 "$UNIT.new"
  mv -f "$UNIT.new" "$UNIT"
  systemctl daemon-reload
  systemctl enable tako-server.service >/dev/null
  if systemctl is-active --quiet tako-server.service; then
    if [ "$TAKO_RESTART" = 1 ]; then
      say "restarting tako-server"
      systemctl restart tako-server.service
    else
      say "reloading tako-server (zero-downtime takeover by the new binary)"
      systemctl reload tako-server.service
    fi
  else
    say "starting tako-server"
    systemctl start tako-server.service
  fi
  systemctl is-active --quiet tako-server.service || {
    journalctl -u tako-server.service -n 60 --no-pager >&2 || true
    die "tako-server did not start; see the log above"
  }
}

is_server_pid() {
  case "$1" in "" | *[!0-9]*) return 1 ;; esac
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q tako-server
}

# The running server: the owner of the control socket (tako.sock -> tako-<pid>.sock; after
# a SIGHUP takeover that is the new process), else the pid this script recorded.
running_pid() {
  link=$(readlink "$SOCKET" 2>/dev/null || true)
  case "$link" in
    *tako-[0-9]*.sock)
      pid=${link##*tako-}
      pid=${pid%.sock}
      if is_server_pid "$pid"; then
        echo "$pid" >"$PIDFILE"
        echo "$pid"
        return 0
      fi
      ;;
  esac
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  is_server_pid "$pid" || return 1
  echo "$pid"
}

wait_gone() { # pid: up to 60 s
  n=0
  while kill -0 "$1" 2>/dev/null && [ $n -lt 600 ]; do
    sleep 0.1
    n=$((n + 1))
  done
  ! kill -0 "$1" 2>/dev/null
}

start_direct() {
  for tool in setpriv setsid; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required to start tako-server as tako (util-linux)"
  done
  touch "$LOGFILE"
  chown tako:tako "$LOGFILE"
  chmod 0640 "$LOGFILE"
  # setsid, not nohup: nohup would start the server with SIGHUP ignored, and SIGHUP is
  # how a re-run hands over to the new binary. setsid detaches it from our terminal.
  # CAP_NET_BIND_SERVICE is passed as an ambient capability (as systemd's unit does).
  cd "$DATA_DIR"
  setsid setpriv --reuid=tako --regid=tako --init-groups \
    --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
    env -i PATH="$SAFE_PATH" HOME="$TAKO_HOME_DIR" USER=tako LOGNAME=tako SHELL=/bin/sh LANG=C.UTF-8 \
    "$BIN" run --data-dir "$DATA_DIR" --socket "$SOCKET" >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  cd /
  say "started tako-server (pid $(cat "$PIDFILE"), log $LOGFILE)"
}

run_direct() {
  if pid=$(running_pid); then
    if [ "$TAKO_RESTART" = 1 ]; then
      say "restarting tako-server (pid $pid)"
      kill -TERM "$pid"
      wait_gone "$pid" || die "tako-server (pid $pid) did not stop within 60 s"
      start_direct
    else
      say "sending SIGHUP to tako-server (pid $pid): the new binary takes over"
      kill -HUP "$pid"
    fi
  else
    start_direct
  fi
}

ensure_podman() {
  command -v podman >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    say "installing Podman (apt-get install podman uidmap slirp4netns)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman uidmap slirp4netns >/dev/null || { say "warning: Podman could not be installed"; return 1; }
    return 0
  fi
  say "warning: podman is not installed and there is no apt-get: container releases are off"
  return 1
}

podman_service_pid() {
  [ -f "$PODMAN_PIDFILE" ] || return 1
  pid=$(cat "$PODMAN_PIDFILE")
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  grep -q podman "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

write_podman_units() {
  cat >"$PODMAN_UNIT.socket" <<UNIT
# Podman's Docker-compatible API for tako-server (container releases); root-owned,
# readable by group tako only. Installed by install-server.sh.
[Unit]
Description=Podman API socket for tako-server

[Socket]
ListenStream=$PODMAN_SOCKET
SocketUser=root
SocketGroup=tako
SocketMode=0660

[Install]
WantedBy=sockets.target
UNIT
  cat >"$PODMAN_UNIT.service" <<UNIT
[Unit]
Description=Podman API for tako-server
Requires=tako-podman.socket
After=tako-podman.socket

[Service]
Type=exec
ExecStart=$(command -v podman) system service --time=0
UNIT
  chmod 0644 "$PODMAN_UNIT.socket" "$PODMAN_UNIT.service"
}

setup_containers() {
  [ "$TAKO_CONTAINERS" = 0 ] && { say "containers: skipped (TAKO_CONTAINERS=0)"; return 0; }
  ensure_podman || return 0
  if has_systemd; then
    write_podman_units
    systemctl daemon-reload
    systemctl enable --now tako-podman.socket >/dev/null
    say "containers: Podman API on $PODMAN_SOCKET (tako-podman.socket, group tako)"
    return 0
  fi
  if ! podman_service_pid >/dev/null; then
    rm -f "$PODMAN_SOCKET"
    setsid podman system service --time=0 "unix://$PODMAN_SOCKET" \
      >>/var/log/tako-podman.log 2>&1 </dev/null &
    echo $! >"$PODMAN_PIDFILE"
  fi
  tries=0
  while [ ! -S "$PODMAN_SOCKET" ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
  [ -S "$PODMAN_SOCKET" ] || { say "warning: the Podman API socket did not appear"; return 0; }
  chgrp tako "$PODMAN_SOCKET"
  chmod 0660 "$PODMAN_SOCKET"
  say "containers: Podman API on $PODMAN_SOCKET (pid $(cat "$PODMAN_PIDFILE"), group tako)"
}

main() {
  check_host
  work=$(mktemp -d)
  fetch_artifact
  verify_artifact
  unpack_artifact
  install_binary
  ensure_user
  ensure_authorized_keys
  ensure_dirs
  setup_containers
  if has_systemd; then
    run_with_systemd
  else
    run_direct
  fi
  say "done: $NEW_VERSION"
}

main "$@"
