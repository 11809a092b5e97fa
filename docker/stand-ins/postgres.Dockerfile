# Stand-in for the official postgres image, from Debian's own packages (PostgreSQL 15: bookworm has no 16),
# for machines that cannot pull from Docker Hub (built by docker/base-images.sh). It honours what
# docker-compose.yml uses of the official image: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, the data in
# /var/lib/postgresql/data, pg_isready on PATH. It runs as the postgres user, never as root.
ARG DEBIAN_IMAGE=tmik-stand-in/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 \
    PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
# The package creates a "main" cluster of its own; the entrypoint makes the one this image serves.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15 \
 && mkdir -p "$PGDATA" /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
# SIGINT is PostgreSQL's "fast" shutdown: open transactions are rolled back, then it exits cleanly.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
