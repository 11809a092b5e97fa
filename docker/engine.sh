#!/bin/sh
# A Docker engine, compose and buildx from Debian's packages, for a Debian 12 (bookworm) machine that has
# none (or only the docker CLI), as root. Not needed where Docker is installed the usual way.
#
#   docker/engine.sh install   # bookworm's containerd, runc, tini, iptables, mmdebstrap (apt-get install);
#                              # trixie's docker.io, docker-compose, docker-buildx unpacked into ENGINE_DIR
#   docker/engine.sh start     # start dockerd in the background, niced (log: ENGINE_DIR/dockerd.log)
#   docker/engine.sh stop
#
# Why trixie's engine: bookworm's docker.io (20.10) is older than the minimum API of a current docker CLI.
# The trixie packages are unpacked (dpkg-deb -x), not installed, so the machine's package set stays
# bookworm's. The CLI finds the plugins through ~/.docker/cli-plugins.
set -eu

ENGINE_DIR=${ENGINE_DIR:-/opt/tmik-docker-engine}
ROOT=$ENGINE_DIR/root
PIDFILE=$ENGINE_DIR/dockerd.pid

die() { echo "engine.sh: $*" >&2; exit 1; }

install_engine() {
    [ "$(id -u)" = 0 ] || die "run as root (it uses apt-get)"
    command -v apt-get >/dev/null || die "needs apt-get (a Debian machine)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends containerd runc tini iptables mmdebstrap ca-certificates
    mkdir -p "$ENGINE_DIR/apt/lists/partial" "$ENGINE_DIR/apt/cache/archives/partial" "$ENGINE_DIR/debs" "$ROOT"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$ENGINE_DIR/apt/sources.list"
    set -- -o Dir::Etc::SourceList="$ENGINE_DIR/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$ENGINE_DIR/apt/lists" -o Dir::Cache="$ENGINE_DIR/apt/cache"
    apt-get "$@" update -q
    packages="docker.io docker-compose docker-buildx"
    command -v docker >/dev/null || packages="$packages docker-cli"
    (cd "$ENGINE_DIR/debs" && rm -f ./*.deb && apt-get "$@" download $packages)
    for deb in "$ENGINE_DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
    mkdir -p "$HOME/.docker/cli-plugins"
    for plugin in docker-compose docker-buildx; do
        ln -sf "$ROOT/usr/libexec/docker/cli-plugins/$plugin" "$HOME/.docker/cli-plugins/$plugin"
    done
    if ! command -v docker >/dev/null; then ln -sf "$ROOT/usr/bin/docker" /usr/local/bin/docker; fi
    echo "engine.sh: installed into $ENGINE_DIR; start it with: docker/engine.sh start"
}

start_engine() {
    if docker info >/dev/null 2>&1; then echo "engine.sh: a Docker engine is already running"; return; fi
    [ -x "$ROOT/usr/sbin/dockerd" ] || die "no engine in $ENGINE_DIR: run 'docker/engine.sh install' first"
    # dockerd finds docker-proxy on PATH; containerd and runc are bookworm's, in /usr/bin and /usr/sbin.
    # Niced (ENGINE_NICE, default 10): builds and containers inherit it, so on a shared machine they
    # take the cores only when nobody else needs them.
    PATH=$ROOT/usr/sbin:$ROOT/usr/bin:$PATH setsid nice -n "${ENGINE_NICE:-10}" dockerd \
        >"$ENGINE_DIR/dockerd.log" 2>&1 &
    echo $! > "$PIDFILE"
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -le 60 ] || die "dockerd did not answer in 60 s; see $ENGINE_DIR/dockerd.log"
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || die "dockerd exited; see $ENGINE_DIR/dockerd.log"
        sleep 1
    done
    echo "engine.sh: dockerd is running (pid $(cat "$PIDFILE"), log $ENGINE_DIR/dockerd.log)"
}

stop_engine() {
    [ -f "$PIDFILE" ] || die "no $PIDFILE: this script did not start the running engine"
    kill "$(cat "$PIDFILE")" && rm -f "$PIDFILE"
    echo "engine.sh: dockerd stopped"
}

case "${1:-}" in
    install) install_engine ;;
    start) start_engine ;;
    stop) stop_engine ;;
    *) die "usage: $0 install|start|stop" ;;
esac
