# Sourced by run.sh and test.sh: make sure .venv exists with hepgg installed ($EXTRAS: "" or "[dev]").
# pip runs only when pyproject.toml or the extras changed since the last install (a stamp in
# .venv records them), so a second start is quick and works offline.
if [ -x .venv/bin/python ]; then
    if [ -n "${PYTHON:-}" ]; then
        echo "hepgg: PYTHON=$PYTHON is ignored because .venv already exists" \
             "($(.venv/bin/python -V)); remove .venv to rebuild it with $PYTHON" >&2
    fi
else
    PYTHON="${PYTHON:-python3}"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || {
        echo "hepgg: needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 1
    }
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.hepgg-installed"
want="$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), sys.argv[1])' "${EXTRAS:-none}")"
# [dev] includes the runtime dependencies, so a [dev] stamp also satisfies a plain run.
if [ ! -f "$stamp" ] || { [ "$(cat "$stamp")" != "$want" ] && [ "$(cat "$stamp")" != "${want% *} [dev]" ]; }; then
    echo "hepgg: installing dependencies into .venv (first start, or pyproject.toml changed)" >&2
    # Setuptools' notes about editable installs are not the user's business.
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -e ".${EXTRAS:-}"
    echo "$want" > "$stamp"
fi
