"""The one settings module, read from the environment (see the configuration table in README.md).

With no environment at all the project runs on embedded defaults: SQLite in the data folder,
an in-process cache, eager Celery tasks and an in-memory channel layer. ``DATABASE_URL`` and
``REDIS_URL`` switch it to PostgreSQL, Redis and Celery workers.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("HEPGG_DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=True)


def _refuse(message: str) -> None:
    """Stop with one line on stderr and exit status 1: a configuration mistake needs a sentence
    that says what to set, not a traceback (the settings are imported by every entry point)."""
    raise SystemExit(f"hepgg: {message}")


def _secret_key() -> str:
    """The configured key; in DEBUG, one generated once and kept in the data folder."""
    configured = env.str("SECRET_KEY", default="")
    if configured:
        return configured
    if not DEBUG:
        _refuse(
            "SECRET_KEY is not set. With DEBUG off hepgg refuses to start without one: "
            "set SECRET_KEY to a long random string (e.g. the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

GATEWAY_PUBLIC_URL = env.str("GATEWAY_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
SKILLS_HOSTS = [h.strip().lower() for h in env.list("SKILLS_HOSTS", default=[]) if h.strip()]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = [environ.urlparse(GATEWAY_PUBLIC_URL).hostname or "localhost", *SKILLS_HOSTS]
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[GATEWAY_PUBLIC_URL])

# Not "daphne": its app config imports Twisted (~20 MB) into every process, uvicorn workers
# included, only to take over `runserver`; `daphne hepgg.asgi:application` needs no app entry.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as our own static files (no CDN)
    "channels",
    "axes",  # the admin login's failed-attempt limit
    "catalog",
    "accounts",
    "usage",
    "analytics",
    "account_api",
    "llm_gateway",
    "proxy",
    "skills",
    "ccas_cli",
]

MIDDLEWARE = [
    "skills.middleware.SkillsHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out admin login
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out client before checking
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "hepgg.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "hepgg.asgi.application"
WSGI_APPLICATION = None

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that a server started by the tests in another process sees it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    # Wait up to 20 s for the write lock, and take it when a transaction begins: a transaction
    # that read first and then writes would otherwise fail at once ("database is locked") when
    # another process (a server's usage writer, a manage.py command) is writing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable PostgreSQL fails a connect within this many seconds (libpq's minimum is 2)
    # rather than after the OS's minutes, so a request that needs it gets a quick 503.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=2)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: shared cache, rate limits, Celery broker, channel layer -------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Connections each pool (one per process and event loop) may open; more requests wait for one.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=50)
# Redis answers in microseconds: a connect or a reply slower than these means it is unreachable
# or hung, and the process serves without it (hepgg.lib.redis) instead of keeping requests waiting.
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=0.5)
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=1.0)

# Django's cache stays in process memory: nothing in hepgg uses it, and what must be shared goes
# through hepgg.lib.sharedcache, which keeps serving while Redis is down (a RedisCache here
# would turn a Redis outage into errors for whatever used it).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Rollup tasks are long and idempotent: a worker takes one at a time, and one that dies mid-task
# leaves it to be redelivered (acks_late on the tasks themselves).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# --- Usage analytics (usage.rollups) ----------------------------------------------------------
# How often the rollup runs: Celery beat's interval, or the web process's timer without a worker.
USAGE_ROLLUP_SECONDS = env.float("USAGE_ROLLUP_SECONDS", default=60.0)
if USAGE_ROLLUP_SECONDS < 1:
    _refuse("USAGE_ROLLUP_SECONDS must be at least 1.")
# Events recorded in the last few seconds wait for the next run (a writer's transaction may still
# be committing rows stamped a moment ago; hosts' clocks must agree within this margin).
USAGE_ROLLUP_SETTLE_SECONDS = env.float("USAGE_ROLLUP_SETTLE_SECONDS", default=10.0)
# How long a run's lease lasts without renewal (renewed after every day it recomputes).
USAGE_ROLLUP_LEASE_SECONDS = env.float("USAGE_ROLLUP_LEASE_SECONDS", default=120.0)
# Raw usage events older than this many days are deleted once rolled up (0: keep them all).
USAGE_RAW_RETENTION_DAYS = env.int("USAGE_RAW_RETENTION_DAYS", default=90)
# Without a Celery worker (eager tasks: the embedded default), each web process runs the rollup
# on a timer, and the analytics page rolls up on demand before it reads.
USAGE_ROLLUP_IN_WEB = env.bool("USAGE_ROLLUP_IN_WEB", default=CELERY_TASK_ALWAYS_EAGER)
CELERY_BEAT_SCHEDULE = {
    "usage-rollup": {
        "task": "usage.rollup",
        "schedule": USAGE_ROLLUP_SECONDS,
        # A run that could not start before the next one is due is dropped, not queued up.
        "options": {"expires": USAGE_ROLLUP_SECONDS},
    },
    "usage-purge": {"task": "usage.purge_events", "schedule": 3600.0, "options": {"expires": 3600}},
}

# --- Upstreams ------------------------------------------------------------------------------
CLOUDFLARE_ACCOUNT_ID = env.str("CLOUDFLARE_ACCOUNT_ID", default="")
CLOUDFLARE_API_TOKEN = env.str("CLOUDFLARE_API_TOKEN", default="")
CLOUDFLARE_API_BASE = env.str(
    "CLOUDFLARE_API_BASE", default="https://api.cloudflare.com/client/v4"
).rstrip("/")
ANTHROPIC_UPSTREAM_URL = env.str(
    "ANTHROPIC_UPSTREAM_URL", default="https://api.anthropic.com"
).rstrip("/")

# Connections the hot paths' pooled outbound client may hold open at once (per process).
OUTBOUND_MAX_CONNECTIONS = env.int("OUTBOUND_MAX_CONNECTIONS", default=1000)

# --- Credentials and usage ------------------------------------------------------------------
# How long a resolved credential stays cached; ending a credential reaches every cache at once.
CREDENTIAL_CACHE_SECONDS = env.int("CREDENTIAL_CACHE_SECONDS", default=300)
# last_used_at / last_seen_at are refreshed at most this often (never a write per request).
LAST_USED_RESOLUTION_SECONDS = env.int("LAST_USED_RESOLUTION_SECONDS", default=60)
# The batched usage writer flushes at this interval, or sooner when a batch fills up.
USAGE_FLUSH_SECONDS = env.float("USAGE_FLUSH_SECONDS", default=1.0)
USAGE_BATCH_SIZE = env.int("USAGE_BATCH_SIZE", default=500)
# Each server process hands its usage batches to a writer process of its own, which encodes and
# writes them off the event loop (``usage.writer_process``); on PostgreSQL by default.
USAGE_WRITER_PROCESS = env.bool(
    "USAGE_WRITER_PROCESS",
    default=DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
)
# Where usage goes while the database is unreachable (spill files) or when it refuses a record
# (rejected.jsonl); `manage.py replay_usage` writes both back. Spill files are capped in bytes.
USAGE_SPILL_DIR = Path(env.str("USAGE_SPILL_DIR", default=str(DATA_DIR / "usage")))
USAGE_SPILL_MAX_BYTES = env.int("USAGE_SPILL_MAX_BYTES", default=1024**3)
# The most usage records a process keeps in memory when neither the database nor the disk
# takes them; beyond it new records are dropped (and logged).
USAGE_MEMORY_MAX_EVENTS = env.int("USAGE_MEMORY_MAX_EVENTS", default=100_000)

# --- Django REST framework ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "account_api.errors.account_api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- OpenAPI (GET /api/schema/, /api/docs/) -------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "hepgg",
    "DESCRIPTION": "The gateway site's API: the account API (master token), the public catalog "
    'and the OpenAI-compatible /v1 (API key). Errors: {"error": "<message>"} on the account '
    "API, OpenAI's error object on /v1.",
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVERS": [{"url": GATEWAY_PUBLIC_URL}],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "hepgg.openapi.merge_fragments",
    ],
}

# --- The rest of Django ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# WhiteNoise serves the admin's assets under any ASGI server; finders make collectstatic optional.
WHITENOISE_USE_FINDERS = True

# --- HTTPS behind a TLS-terminating proxy ---------------------------------------------------
# SECURE_PROXY_SSL_HEADER names the header the proxy sets on HTTPS requests ("X-Forwarded-Proto",
# or "X-Forwarded-Proto: https" to spell the value): with it, request.is_secure() is true behind
# the proxy and every URL built from a request (skills indexes, links) is https. Set it only when
# the proxy always sets or strips that header, or a client could claim https.
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="").strip()
if _proxy_ssl_header:
    _name, _, _value = _proxy_ssl_header.partition(":")
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _name.strip().upper().replace("-", "_"),
        _value.strip() or "https",
    )
HTTPS_PUBLIC = GATEWAY_PUBLIC_URL.startswith("https://")
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=HTTPS_PUBLIC)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # HSTS only when the public URL is https (a year; subdomains included, no preload list).
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS_PUBLIC else 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds the whole registrable domain for years: the apex domain's owner opts
        # in (SECURE_HSTS_PRELOAD=true), so its absence is not a deploy warning here.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # Redirect http to https only when the proxy says which is which (else: a redirect loop).
    SECURE_SSL_REDIRECT = env.bool(
        "SECURE_SSL_REDIRECT", default=HTTPS_PUBLIC and bool(_proxy_ssl_header)
    )
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # load balancers probe over http

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "hepgg.lib.redaction.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Replace Django's default handlers (which would print unfiltered copies of each line).
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

# --- Request bodies of the routes Django serves (hepgg.lib.bodylimit) ------------------------
# Counted as they arrive, before Django spools them; the account API (1 MiB), skills imports
# (SKILLS_MAX_UPLOAD_BYTES) and the admin's skill upload have their own limits, /v1 and /anthropic
# theirs (GATEWAY_MAX_BODY_BYTES, PROXY_MAX_BODY_BYTES). Django's DATA_UPLOAD_MAX_MEMORY_SIZE.
DJANGO_MAX_BODY_BYTES = env.int("DJANGO_MAX_BODY_BYTES", default=2_621_440)

# --- Request headers, every surface (hepgg.lib.headerlimit) ---------------------------------
# uvicorn with httptools (what `make run` serves with) hands the application headers of any size;
# past this total (names and values, in bytes) the answer is 431 in the surface's shape.
MAX_REQUEST_HEADER_BYTES = env.int("MAX_REQUEST_HEADER_BYTES", default=32 * 1024)

# --- Skills registry (skills) ---------------------------------------------------------------
# Import limits, counted while inflating (never from an archive's declared sizes); the defaults
# sit near the ecosystem's own (the `skills` CLI caps archives at 1,000 files).
SKILLS_MAX_FILES = env.int("SKILLS_MAX_FILES", default=1000)
SKILLS_MAX_UNPACKED_BYTES = env.int("SKILLS_MAX_UNPACKED_BYTES", default=25 * 1024 * 1024)
SKILLS_MAX_FILE_BYTES = env.int("SKILLS_MAX_FILE_BYTES", default=10 * 1024 * 1024)
# The request body of an import (compressed); bigger bodies get 413 before any parsing.
SKILLS_MAX_UPLOAD_BYTES = env.int("SKILLS_MAX_UPLOAD_BYTES", default=30 * 1024 * 1024)
# Per-process cache of immutable blobs and built zips (content-addressed, so never stale).
SKILLS_BLOB_CACHE_BYTES = env.int("SKILLS_BLOB_CACHE_BYTES", default=64 * 1024 * 1024)
# Per-process cache of built zips; one zip may take up to half (a skill unpacks to 25 MiB at most).
SKILLS_ZIP_CACHE_BYTES = env.int("SKILLS_ZIP_CACHE_BYTES", default=128 * 1024 * 1024)

# --- Claude proxy (proxy) -------------------------------------------------------------------
# Upstream read timeout: the longest silence tolerated between two reads (Claude Code itself
# gives up on a stream silent for 300 s, and long non-streaming generations take minutes).
PROXY_UPSTREAM_READ_TIMEOUT = env.float("PROXY_UPSTREAM_READ_TIMEOUT", default=600.0)
PROXY_UPSTREAM_CONNECT_TIMEOUT = env.float("PROXY_UPSTREAM_CONNECT_TIMEOUT", default=10.0)
# Request bodies are streamed upstream, never buffered; above this size the proxy answers 413.
PROXY_MAX_BODY_BYTES = env.int("PROXY_MAX_BODY_BYTES", default=64 * 1024 * 1024)
if PROXY_MAX_BODY_BYTES < 32 * 1024 * 1024:
    _refuse("PROXY_MAX_BODY_BYTES must be at least 32 MiB (33554432).")
# How often the latest anthropic-ratelimit-unified-* values per machine are written.
PROXY_RATELIMIT_FLUSH_SECONDS = env.float("PROXY_RATELIMIT_FLUSH_SECONDS", default=5.0)

# --- OpenAI-compatible gateway (llm_gateway) ------------------------------------------------
# Request bodies above this get 413 before they are read in full.
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=16 * 1024 * 1024)
# Upstream timeouts: connecting, and the longest silence between two reads of a response.
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env.float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", default=10.0)
GATEWAY_UPSTREAM_READ_TIMEOUT = env.float("GATEWAY_UPSTREAM_READ_TIMEOUT", default=300.0)
# How long a process keeps a catalog entry (routes, prices) before reading it again.
GATEWAY_CATALOG_CACHE_SECONDS = env.float("GATEWAY_CATALOG_CACHE_SECONDS", default=10.0)

# --- Failed authentication (hepgg.lib.authfailures) ------------------------------------------
# Per client address and credential type, per window: answered at once up to SLOW_AFTER
# failures, then slowed (async surfaces), then refused with 429 past LIMIT.
AUTH_FAILURES_WINDOW_SECONDS = env.int("AUTH_FAILURES_WINDOW_SECONDS", default=300)
AUTH_FAILURES_SLOW_AFTER = env.int("AUTH_FAILURES_SLOW_AFTER", default=10)
AUTH_FAILURES_LIMIT = env.int("AUTH_FAILURES_LIMIT", default=30)
AUTH_FAILURES_MAX_DELAY = env.float("AUTH_FAILURES_MAX_DELAY", default=2.0)
# Behind a load balancer: the header whose rightmost entry is the client (e.g. X-Forwarded-For).
CLIENT_IP_HEADER = env.str("CLIENT_IP_HEADER", default="")

# The admin login (django-axes): past ADMIN_LOGIN_FAILURE_LIMIT failures from one address, 429
# with Retry-After for ADMIN_LOGIN_COOLOFF_SECONDS. Attempts are kept in the database (the cache
# handler would need Redis to be shared); successful logins are not logged (no write per login).
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("ADMIN_LOGIN_COOLOFF_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_CLIENT_IP_CALLABLE = "hepgg.lib.authfailures.client_of_request"
AXES_LOCKOUT_CALLABLE = "hepgg.lib.authfailures.admin_lockout_response"
