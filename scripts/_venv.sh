# Sourced by run.sh and test.sh: make sure .venv exists with hepgg installed ($EXTRAS: "[dev]").
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "hepgg needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${EXTRAS:-}"
