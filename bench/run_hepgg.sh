#!/usr/bin/env bash
# Both gateway benchmarks with hepgg as a target, in one go:
#   bench/run_hepgg.sh                 # hepgg on uvicorn (the production command), one worker
#   WORKERS=2 bench/run_hepgg.sh       # uvicorn with 2 workers (how throughput scales)
#   SERVER=daphne bench/run_hepgg.sh   # hepgg on daphne (which serves it too)
# hepgg runs as deployed: PostgreSQL and Redis (a fresh bench database), DEBUG off, with
# authentication and metering on. The OpenAI run measures two keys side by side, interleaved
# with the peers (LiteLLM, Portkey's gateway): "hepgg", a key without limits, and "hepgg+limits",
# a key with requests and tokens per minute and a monthly budget (far above the load, so every
# limit is checked and none refuses). Extra arguments go to both run_*.py scripts
# (e.g. --rounds 1 --no-litellm).
#   METERING=off bench/run_hepgg.sh       # the same with usage metering off (bench/metering_off.py)
#   METERING=compare bench/run_hepgg.sh   # OpenAI c=32 with metering on and off, same rounds
#   METERING=switch bench/run_hepgg.sh    # the same in one process, switched (bench/metering_ab.py)
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER="${SERVER:-uvicorn}"
WORKERS="${WORKERS:-1}"
METERING="${METERING:-on}"
PORT="${HEPGG_BENCH_PORT:-18200}"
export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hepgg_bench}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/15}"
export HEPGG_DATA_DIR="$PWD/bench/results/hepgg-data"
export DEBUG=false SECRET_KEY=bench-only-secret-key ALLOWED_HOSTS=127.0.0.1
export CLOUDFLARE_ACCOUNT_ID=bench CLOUDFLARE_API_TOKEN=bench-token LOG_LEVEL=WARNING
mkdir -p "$HEPGG_DATA_DIR"

psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS ${DATABASE_URL##*/}" \
    -c "CREATE DATABASE ${DATABASE_URL##*/}"
redis-cli -u "$REDIS_URL" flushdb >/dev/null
.venv/bin/python manage.py migrate -v0
credentials=$(.venv/bin/python manage.py shell --no-imports -c '
import json
from accounts.services import account_create, api_key_mint, machine_register
account, _ = account_create(email="bench@example.com")
_key, secret = api_key_mint(account=account, model="cf-gpt-oss-20b", name="bench")
limited, limited_secret = api_key_mint(
    account=account, model="cf-gpt-oss-20b", name="bench-limits"
)
limited.requests_per_minute = 10_000_000
limited.tokens_per_minute = 1_000_000_000
limited.monthly_budget_usd = 1_000_000
limited.save()
_machine, token = machine_register(account=account, hostname="bench")
print(json.dumps({"key": secret, "limited_key": limited_secret, "proxy_token": token}))
')
key=$(echo "$credentials" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["key"])')
limited_key=$(echo "$credentials" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["limited_key"])')
token=$(echo "$credentials" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["proxy_token"])')

app_for() {  # the ASGI application with metering on or off
    if [ "$1" = off ]; then echo bench.metering_off:application; else echo hepgg.asgi:application; fi
}
server_cmd() {
    case "$SERVER" in
        uvicorn) echo "exec .venv/bin/uvicorn $(app_for "$1") --host 127.0.0.1 --port $PORT \
--lifespan on --no-access-log --loop uvloop --http httptools --workers $WORKERS" ;;
        daphne) echo "exec .venv/bin/daphne -b 127.0.0.1 -p $PORT $(app_for "$1")" ;;
        *) echo "SERVER must be uvicorn or daphne" >&2; exit 2 ;;
    esac
}

if [ "$METERING" = compare ]; then
    # The cost of metering: OpenAI chat against hepgg with metering on and a second hepgg with it
    # off (bench/metering_off.py), both running, measured in the same interleaved rounds on the
    # same database; the table's last section gives each round's ratio and their median.
    off_port=$((PORT + 1))
    exec .venv/bin/python bench/run_openai.py --hepgg-url "http://127.0.0.1:$PORT" \
        --hepgg-key "$key" --hepgg-model cf-gpt-oss-20b --hepgg-cmd "$(server_cmd on)" \
        --hepgg-unmetered-url "http://127.0.0.1:$off_port" \
        --hepgg-unmetered-cmd "$(PORT=$off_port server_cmd off)" --no-litellm --no-portkey "$@"
fi
if [ "$METERING" = switch ]; then
    exec .venv/bin/python bench/metering_ab.py --hepgg-url "http://127.0.0.1:$PORT" \
        --hepgg-key "$key" --hepgg-model cf-gpt-oss-20b \
        --hepgg-cmd "$(server_cmd on | sed 's/hepgg.asgi:application/bench.metering_switch:application/')" \
        "$@"
fi
cmd="$(server_cmd "$METERING")"

echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python bench/run_openai.py --hepgg-url "http://127.0.0.1:$PORT" --hepgg-key "$key" \
    --hepgg-limited-key "$limited_key" --hepgg-model cf-gpt-oss-20b --hepgg-cmd "$cmd" "$@"
.venv/bin/python bench/run_anthropic.py --hepgg-url "http://127.0.0.1:$PORT/anthropic/$token" \
    --hepgg-cmd "$cmd" "$@"
.venv/bin/python bench/open_streams.py --hepgg-url "http://127.0.0.1:$PORT/anthropic/$token" \
    --hepgg-cmd "$cmd" --streams "${STREAMS:-500}"
.venv/bin/python - <<'PY'
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")
django.setup()
from usage.models import UsageEvent
print("usage events recorded by hepgg during the runs:",
      {s: UsageEvent.objects.filter(source=s).count() for s in ("gateway", "proxy")})
PY
