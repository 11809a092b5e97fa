#!/bin/sh
# The base images the project's Dockerfiles and docker-compose.yml start from: the official
# python:3.11-slim-bookworm and postgres:16 when they can be pulled (or are already here), otherwise
# stand-ins built from Debian's packages (mmdebstrap + docker import, then docker/stand-ins/*.Dockerfile).
#
#   docker/base-images.sh              # prints PYTHON_BASE_IMAGE=... and POSTGRES_IMAGE=... (for compose)
#   docker/base-images.sh --stand-ins  # always use (and build if missing) the stand-ins
#   docker/base-images.sh --rebuild    # rebuild the stand-ins even if they exist
#
# Progress goes to stderr; stdout has only the two assignments, so `eval "$(docker/base-images.sh)"` works.
# Building the stand-ins needs root (mmdebstrap), mmdebstrap itself and Debian's mirror; about 3-5 min.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
OFFICIAL_PYTHON=python:3.11-slim-bookworm
OFFICIAL_POSTGRES=postgres:16
DEBIAN_STAND_IN=tmik-stand-in/debian:bookworm
PYTHON_STAND_IN=tmik-stand-in/python:3.11-bookworm
POSTGRES_STAND_IN=tmik-stand-in/postgres:15-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
LOCAL_CAS=${LOCAL_CAS:-/usr/local/share/ca-certificates}

say() { echo "base-images: $*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

mode=auto
case "${1:-}" in
    "") ;;
    --stand-ins) mode=stand-ins ;;
    --rebuild) mode=rebuild ;;
    *) echo "usage: $0 [--stand-ins|--rebuild]" >&2; exit 2 ;;
esac

official_available() {  # the image is here, or can be pulled within PULL_TIMEOUT seconds
    have "$1" && return 0
    say "pulling $1 ..."
    timeout "$PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1
}

build_debian() {
    command -v mmdebstrap >/dev/null || { say "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }
    say "building $DEBIAN_STAND_IN with mmdebstrap (minbase bookworm; no docs, man pages or locales) ..."
    # The dpkg options are written into the image too, so later apt-get installs stay as lean.
    nice mmdebstrap --quiet --variant=minbase \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm - \
        "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main" \
        | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$DEBIAN_STAND_IN" >/dev/null
}

build_stand_in() {  # TAG DOCKERFILE [docker build options]
    tag=$1 dockerfile=$2
    shift 2
    say "building $tag ..."
    # Host networking: on some machines the default bridge cannot reach the Debian mirror during a build.
    nice docker build --quiet --network host --build-arg DEBIAN_IMAGE="$DEBIAN_STAND_IN" "$@" \
        -t "$tag" -f "$HERE/stand-ins/$dockerfile" "$HERE/stand-ins" >/dev/null
}

stand_ins() {
    if [ "$mode" = rebuild ] || ! have "$DEBIAN_STAND_IN"; then build_debian; fi
    if [ "$mode" = rebuild ] || ! have "$PYTHON_STAND_IN"; then
        # The CA certificates this machine added to its own trust store go into the image too: where
        # HTTPS leaves through an inspecting proxy, pip inside the builds needs them.
        set --
        if ls "$LOCAL_CAS"/*.crt >/dev/null 2>&1; then set -- --build-context cas="$LOCAL_CAS"; fi
        build_stand_in "$PYTHON_STAND_IN" python.Dockerfile "$@"
    fi
    if [ "$mode" = rebuild ] || ! have "$POSTGRES_STAND_IN"; then
        build_stand_in "$POSTGRES_STAND_IN" postgres.Dockerfile
    fi
}

if [ "$mode" = auto ] && official_available "$OFFICIAL_PYTHON" && official_available "$OFFICIAL_POSTGRES"; then
    say "using the official images"
    echo "PYTHON_BASE_IMAGE=$OFFICIAL_PYTHON"
    echo "POSTGRES_IMAGE=$OFFICIAL_POSTGRES"
    exit 0
fi
[ "$mode" = auto ] && say "the official images cannot be pulled: using stand-ins built from Debian packages"
stand_ins
say "stand-ins ready: $PYTHON_STAND_IN, $POSTGRES_STAND_IN"
echo "PYTHON_BASE_IMAGE=$PYTHON_STAND_IN"
echo "POSTGRES_IMAGE=$POSTGRES_STAND_IN"
