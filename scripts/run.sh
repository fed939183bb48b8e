#!/bin/sh
# Set up and run the gateway on the embedded defaults (SQLite, in-process cache, eager tasks).
set -eu
cd "$(dirname "$0")/.."
EXTRAS="" . scripts/_venv.sh
.venv/bin/python manage.py migrate --noinput
echo "hepgg: http://${HOST:-127.0.0.1}:${PORT:-8000}/  (first admin login: .venv/bin/python manage.py createsuperuser)"
exec sh scripts/serve.sh
