#!/bin/sh
# Set up and run the gateway on the embedded defaults (SQLite, in-process cache, eager tasks).
# HOST and PORT choose where it listens (default 127.0.0.1:8000).
set -eu
cd "$(dirname "$0")/.."
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
EXTRAS="" . scripts/_venv.sh
if ! .venv/bin/python -c 'import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)' "$HOST" "$PORT"; then
    echo "hepgg: port $PORT on $HOST is already in use; run with another, e.g. PORT=8001 make run" >&2
    exit 1
fi
.venv/bin/python manage.py migrate --noinput
echo "hepgg: http://$HOST:$PORT/  (first admin login: .venv/bin/python manage.py createsuperuser)"
HOST="$HOST" PORT="$PORT" exec sh scripts/serve.sh
