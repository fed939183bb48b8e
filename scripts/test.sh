#!/bin/sh
# Set up and run the whole test suite (on SQLite by default; CI sets DATABASE_URL and REDIS_URL).
# Arguments go to pytest: sh scripts/test.sh -k health   (or: make test ARGS='-k health')
set -eu
cd "$(dirname "$0")/.."
EXTRAS="[dev]" . scripts/_venv.sh
# The suite keeps its files (test databases, generated keys) away from the dev server's data/.
export HEPGG_DATA_DIR="${HEPGG_DATA_DIR:-$PWD/.test-data}"
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
    echo "models changed without a migration: run manage.py makemigrations" >&2
    exit 1
}
exec .venv/bin/python -m pytest "$@"
