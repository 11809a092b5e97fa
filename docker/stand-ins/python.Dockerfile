# Stand-in for python:3.11-slim-bookworm, from Debian's own packages, for machines that cannot pull from
# Docker Hub (built by docker/base-images.sh). What the project's Dockerfiles rely on is the same as in the
# official image: `python` and `pip` on PATH, pip allowed to install system-wide, the C headers (so a
# builder stage can compile an extension once it adds a compiler), and no compiler.
# Build context "cas" (optional): extra CA certificates (*.crt) to trust, e.g. those of the machine that
# builds it (docker/base-images.sh passes /usr/local/share/ca-certificates), so pip in the project's
# builds gets through an egress proxy that this machine trusts. Without it the stage below is empty.
ARG DEBIAN_IMAGE=tmik-stand-in/debian:bookworm
FROM scratch AS cas

FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8
RUN --mount=type=bind,from=cas,target=/tmp/cas \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-pip python-is-python3 libpython3.11-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && for crt in /tmp/cas/*.crt; do [ -f "$crt" ] && cp "$crt" /usr/local/share/ca-certificates/ || true; done \
 && update-ca-certificates
CMD ["python3"]
