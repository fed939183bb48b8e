#!/bin/sh
# Installs ccas (Claude Code analytics) for the current user, from the hepgg gateway at
# @@GATEWAY_URL@@ and nothing else. Needs python3 3.10 or newer. Re-run it to upgrade.
#
#   curl -fsSL @@GATEWAY_URL@@/ccas/install.sh | sh
#
# CCAS_BIN_DIR chooses where the command goes (default: ~/.local/bin).
set -eu

GATEWAY=@@GATEWAY_URL_QUOTED@@
VERSION=@@VERSION@@
SHA256=@@SHA256@@
URL="$GATEWAY/ccas/ccas.pyz"
BIN_DIR="${CCAS_BIN_DIR:-$HOME/.local/bin}"
TARGET="$BIN_DIR/ccas"

fail() {
    printf 'ccas installer: %s\n' "$*" >&2
    exit 1
}

PYTHON=$(command -v python3 2>/dev/null || true)
[ -n "$PYTHON" ] || fail "python3 is required (3.10 or newer) and was not found on PATH"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || fail "ccas needs Python 3.10 or newer; python3 is $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"

mkdir -p "$BIN_DIR" || fail "cannot create $BIN_DIR"
TMP="$BIN_DIR/.ccas.download.$$"
trap 'rm -f "$TMP"' EXIT
trap 'rm -f "$TMP"; exit 130' INT TERM

if command -v curl >/dev/null 2>&1; then
    curl -fsSL -o "$TMP" "$URL" || fail "could not download $URL"
elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$TMP" "$URL" || fail "could not download $URL"
else
    "$PYTHON" - "$URL" "$TMP" <<'PY' || fail "could not download $URL"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as response, open(sys.argv[2], "wb") as out:
    out.write(response.read())
PY
fi

if command -v sha256sum >/dev/null 2>&1; then
    GOT=$(sha256sum "$TMP" | cut -d ' ' -f 1)
elif command -v shasum >/dev/null 2>&1; then
    GOT=$(shasum -a 256 "$TMP" | cut -d ' ' -f 1)
else
    GOT=$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$TMP")
fi
[ "$GOT" = "$SHA256" ] || fail "checksum mismatch for $URL (expected $SHA256, got $GOT): nothing installed. If the gateway was just upgraded, run the installer again."

chmod 755 "$TMP"
"$PYTHON" "$TMP" --version >/dev/null 2>&1 || fail "the downloaded ccas does not run with $PYTHON"
mv -f "$TMP" "$TARGET" || fail "cannot write $TARGET"
trap - EXIT INT TERM

"$PYTHON" "$TARGET" _installed-from "$GATEWAY" >/dev/null 2>&1 || true
printf 'Installed ccas %s to %s (sha256 %s).\n' "$VERSION" "$TARGET" "$SHA256"
case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *) printf '%s is not on your PATH: add this line to your shell profile (~/.profile, ~/.bashrc or ~/.zshrc):\n    export PATH="%s:$PATH"\n' "$BIN_DIR" "$BIN_DIR" ;;
esac
printf 'Next: ccas init   (registers this machine and points Claude Code at %s)\n' "$GATEWAY"
