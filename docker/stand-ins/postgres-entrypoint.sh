#!/bin/sh
# Creates the cluster on first start (empty data folder) with POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB, as the official image does, then runs PostgreSQL in the foreground.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD is not set; set it to create the database" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # A private socket and no TCP while the database is made, so pg_isready (the healthcheck)
        # does not report ready before it exists.
        initsock=$(mktemp -d)
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$initsock" start
        createdb -h "$initsock" -U "$POSTGRES_USER" "$POSTGRES_DB"
        pg_ctl -D "$PGDATA" -w -m fast stop
        rmdir "$initsock"
    fi
    echo "postgres-entrypoint: created database $POSTGRES_DB for user $POSTGRES_USER"
fi
exec postgres -D "$PGDATA"
