#!/usr/bin/env bash
# Install LiteLLM's proxy into its own venv at bench/.venv-litellm (idempotent).
# Pinned on purpose:
#  - LiteLLM 1.107.0 was a compromised release (pulled from PyPI); never float to "latest".
#  - From 1.108.8 on, the [proxy] extra pins litellm-proxy-extras / litellm-enterprise
#    post-releases (and from 1.110 a separate `litellm-proxy` package) that the package
#    index reachable here does not serve; 1.108.7 is the newest whose [proxy] extra resolves.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv-litellm"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
if [[ "$installed" != "$LITELLM_VERSION" ]] || [[ ! -x "$VENV/bin/litellm" ]] \
   || ! "$VENV/bin/python" -c 'import fastapi, uvicorn, backoff' 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
fi
echo "litellm $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))') in $VENV"
