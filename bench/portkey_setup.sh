#!/usr/bin/env bash
# Install Portkey's open-source AI gateway (Node) into bench/.portkey (git-ignored), idempotent.
# Pinned: @portkey-ai/gateway 1.15.2, the version the issue measured. Started by bench/peers.py as
#   node bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js --headless --port=N
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$BENCH_DIR/.portkey"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
mkdir -p "$DIR"
installed="$(node -p "require('$DIR/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true)"
if [[ "$installed" != "$PORTKEY_VERSION" ]]; then
  [[ -f "$DIR/package.json" ]] || echo '{"private": true}' > "$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --save-exact "@portkey-ai/gateway@$PORTKEY_VERSION"
fi
echo "portkey gateway $(node -p "require('$DIR/node_modules/@portkey-ai/gateway/package.json').version") in $DIR (node $(node --version))"
