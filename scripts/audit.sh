#!/bin/sh
# Dependency audit of the hashed lock (requirements.lock).
# 1. pip-audit, strict, so that a package it could not look up is a failure rather than a silent
#    "No known vulnerabilities found"; advisories in security/audit-ignore.toml (each with its
#    reason) are passed to it as --ignore-vuln.
# 2. Where no pip-audit service answers (PyPI's JSON API, api.osv.dev), the offline audit:
#    scripts/audit_offline.py against the OSV advisories vendored in security/osv/ (a dated
#    snapshot of pypa/advisory-database; security/osv/SOURCE.md). Its answer is the audit's.
set -u
cd "$(dirname "$0")/.."
ignores=$(.venv/bin/python -c '
import tomllib, pathlib
path = pathlib.Path("security/audit-ignore.toml")
entries = tomllib.loads(path.read_text()).get("ignore", []) if path.exists() else []
print(" ".join("--ignore-vuln " + e["id"] for e in entries))')
# shellcheck disable=SC2086
out=$(.venv/bin/pip-audit --strict --disable-pip --progress-spinner off $ignores \
      -r requirements.lock 2>&1)
status=$?
echo "$out" | tail -n 40
if [ "$status" -eq 0 ]; then
    echo "dependency audit: no known vulnerability in requirements.lock (pip-audit)"
    exit 0
fi
if echo "$out" | grep -q -E "could not be audited|ConnectionError|Failed to resolve|Max retries"; then
    echo "dependency audit: pip-audit NOT RUN - no vulnerability service reachable;" \
         "auditing offline against the vendored advisories"
    .venv/bin/python scripts/audit_offline.py
    exit $?
fi
echo "dependency audit: FAILED (see above)"
exit 1
