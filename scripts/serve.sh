#!/bin/sh
# Serve both sites on $HOST:$PORT (default 127.0.0.1:8000): the server `make run` starts.
# uvicorn, not daphne: uvicorn's send() waits while a slow client's socket is full, so a long
# stream to a slow reader is paced end to end; daphne buffers whatever the application sends
# (django/daphne#170) and Twisted spools every request body to disk before the application runs.
# `daphne hepgg.asgi:application` still serves everything (see README).
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/uvicorn hepgg.asgi:application --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
    --lifespan on
