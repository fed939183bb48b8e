#!/bin/sh
# Set up and run the whole test suite (on SQLite by default; CI sets DATABASE_URL and REDIS_URL).
set -eu
cd "$(dirname "$0")/.."
EXTRAS="[dev]" . scripts/_venv.sh
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
    echo "models changed without a migration: run manage.py makemigrations" >&2
    exit 1
}
exec .venv/bin/python -m pytest "$@"
