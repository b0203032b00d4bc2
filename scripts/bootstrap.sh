#!/usr/bin/env bash
# Idempotent set-up shared by `make run` and `make test`: ffmpeg, the virtualenv with the locked
# requirements (requirements-dev.lock, hashes checked), the web page's npm packages, Debian's chromium (for the browser test),
# PostgreSQL and Redis answering, and the database of DATABASE_URL. Says nothing
# when there is nothing to do, one line per step it takes, and everything it knows on failure.
# --no-services stops after the virtualenv (for `make lint`, which needs no database).
# --bench also installs wrk, the HTTP load generator `make bench` drives the API with.
set -euo pipefail

WITH_SERVICES=1
WITH_BENCH=0
case "${1:-}" in
    "") ;;
    --no-services) WITH_SERVICES=0 ;;
    --bench) WITH_BENCH=1 ;;
    *) echo "usage: $0 [--no-services | --bench]" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv
STAMP="$VENV/.requirements.sha256"
WAIT_SECONDS=30

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

# Runs a command with its output kept aside, shown only if the command fails.
quietly() {
    local what=$1 log
    shift
    log=$(mktemp)
    say "$what"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "$what failed: $*"
    fi
    rm -f "$log"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

install_ffmpeg() {
    command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 && return
    command -v apt-get >/dev/null 2>&1 || die "ffmpeg/ffprobe missing and no apt-get: install ffmpeg by hand"
    export DEBIAN_FRONTEND=noninteractive
    quietly "apt-get update" as_root apt-get update
    quietly "installing ffmpeg" as_root apt-get install -y --no-install-recommends ffmpeg
    command -v ffprobe >/dev/null 2>&1 || die "ffmpeg installed but ffprobe still not on PATH"
}

apt_install() {
    local what=$1
    shift
    command -v apt-get >/dev/null 2>&1 || die "$what missing and no apt-get: install $* by hand"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then
        quietly "apt-get update" as_root apt-get update
        APT_UPDATED=1
    fi
    quietly "installing $*" as_root apt-get install -y --no-install-recommends "$@"
}

# The web page's browser packages (hls.js), pinned by package-lock.json; `npm ci` again only
# when the lock file changed since the last install.
install_node_packages() {
    command -v npm >/dev/null 2>&1 || apt_install npm nodejs npm
    local wanted stamp=node_modules/.package-lock.sha256
    wanted=$(sha256sum package-lock.json | cut -d' ' -f1)
    if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        quietly "npm ci (package-lock.json)" npm ci --no-audit --no-fund
        echo "$wanted" >"$stamp"
    fi
}

# Debian's chromium, which the web page's browser test drives (no browser downloads).
install_chromium() {
    [ -x /usr/bin/chromium ] || apt_install chromium chromium
}

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    die "Python 3.11 or newer not found (set PYTHON=/path/to/python3)"
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        quietly "creating $VENV" "$(find_python)" -m venv "$VENV"
        rm -f "$STAMP"
    fi
    local wanted
    wanted=$(sha256sum requirements-dev.lock | cut -d' ' -f1)
    if [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
        # Exactly what the lock names, every package checked against its hash: CI installs
        # what was tested, and nothing a resolver would pick on the day.
        quietly "installing requirements-dev.lock into $VENV" \
            "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --require-hashes \
            -r requirements-dev.lock
        echo "$wanted" >"$STAMP"
    fi
}

# Prints "pg_host pg_port redis_host redis_port" from the environment, else .env, else the
# defaults of services/config.py (read here without importing the app, which may not import yet).
service_addresses() {
    "$VENV/bin/python" - <<'PY'
import os
from urllib.parse import urlsplit

from dotenv import dotenv_values

env = {**dotenv_values(".env"), **os.environ}
db = urlsplit(env.get("DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor")
redis = urlsplit(env.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
print(db.hostname or "127.0.0.1", db.port or 5432, redis.hostname or "127.0.0.1", redis.port or 6379)
PY
}

is_local() { case "$1" in 127.0.0.1 | localhost | ::1) return 0 ;; *) return 1 ;; esac; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 2
    else
        port_open "$1" "$2"
    fi
}

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        # An auth error still proves a live server; the URL's credentials are the app's business.
        redis-cli -h "$1" -p "$2" ping 2>/dev/null | grep -qE 'PONG|NOAUTH'
    else
        port_open "$1" "$2"
    fi
}

wait_until() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

ensure_postgres() {
    local host=$1 port=$2 cluster
    pg_answers "$host" "$port" && return
    if is_local "$host" && command -v pg_lsclusters >/dev/null 2>&1; then
        # The local cluster configured for this port, e.g. "15 main".
        cluster=$(pg_lsclusters -h | awk -v port="$port" '$3 == port { print $1, $2; exit }')
        if [ -n "$cluster" ]; then
            # shellcheck disable=SC2086 # "$cluster" is two words on purpose: version and name
            quietly "starting PostgreSQL $cluster" as_root pg_ctlcluster --skip-systemctl-redirect $cluster start
            wait_until pg_answers "$host" "$port" \
                || die "PostgreSQL $cluster started but $host:$port does not answer after ${WAIT_SECONDS}s"
            return
        fi
    fi
    die "PostgreSQL does not answer on $host:$port (DATABASE_URL) and no local cluster on that port to start"
}

ensure_redis() {
    local host=$1 port=$2
    redis_answers "$host" "$port" && return
    if is_local "$host" && command -v redis-server >/dev/null 2>&1; then
        quietly "starting Redis on port $port" \
            redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no
        wait_until redis_answers "$host" "$port" \
            || die "Redis started but $host:$port does not answer after ${WAIT_SECONDS}s"
        return
    fi
    die "Redis does not answer on $host:$port (REDIS_URL) and there is no local redis-server to start"
}

ensure_database() {
    "$VENV/bin/python" - <<'PY' || die "could not create the database of DATABASE_URL (see above)"
import os

import psycopg
from dotenv import dotenv_values
from psycopg import sql
from sqlalchemy.engine import make_url

env = {**dotenv_values(".env"), **os.environ}
url = make_url(env.get("DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor")
name = url.database or "conveyor"
admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"bootstrap: created database {name}")
PY
}

install_ffmpeg
ensure_venv
[ "$WITH_SERVICES" -eq 1 ] || exit 0
install_node_packages
install_chromium
if [ "$WITH_BENCH" -eq 1 ] && ! command -v wrk >/dev/null 2>&1; then apt_install wrk wrk; fi
addresses=$(service_addresses) || die "could not read DATABASE_URL / REDIS_URL"
read -r PG_HOST PG_PORT REDIS_HOST REDIS_PORT <<<"$addresses"
ensure_postgres "$PG_HOST" "$PG_PORT"
ensure_redis "$REDIS_HOST" "$REDIS_PORT"
ensure_database
