"""Django settings, all driven by environment variables (see docs/operations.md).

Development and production differ only by environment: with nothing set, Switchyard runs on an
embedded SQLite file under `var/` with a generated, persisted secret key.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SWITCHYARD_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "static").mkdir(exist_ok=True)

PRODUCTION = env_bool("SWITCHYARD_PRODUCTION", False)
DEBUG = env_bool("DEBUG", not PRODUCTION)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when SWITCHYARD_PRODUCTION is true")
    # Development: generate once and keep it, so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "config.admin_site.SwitchyardAdminConfig",  # Django's admin plus the workers page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_q",
    "runs",
    "jobs",
    "artifacts",
    "hooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.RejectUnstorableInputMiddleware",
    # ServeStatic. Every middleware here is async-capable, so that under ASGI the chain runs on
    # the event loop, without a hop to a thread and back for each request.
    "config.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "runs.context_processors.worker_banner",
            ],
        },
    }
]


def _database() -> dict:
    url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'switchyard.sqlite3'}")
    try:
        config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several types for bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.postgresql" and env_bool("SWITCHYARD_DB_POOL",
                                                                         False):
        # The ASGI web process: persistent per-thread connections leak under async request
        # handling (Django's advice), so it uses psycopg's pool; workers keep CONN_MAX_AGE.
        config["CONN_MAX_AGE"] = 0
        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": env_int("SWITCHYARD_DB_POOL_SIZE", 10, minimum=1)}
    if config["ENGINE"] == "django.db.backends.postgresql":
        # A process frozen inside a transaction (a long GC pause, SIGSTOP, a VM migration)
        # keeps its row locks, and every other machine touching that run waits on it forever.
        # PostgreSQL ends such a session after this long, releasing its locks; the frozen
        # process's write then fails and its attempt is fenced like any stale one.
        idle = env_int("SWITCHYARD_DB_IDLE_TX_TIMEOUT_MS", 30000, minimum=0)
        options = config.setdefault("OPTIONS", {})
        options["options"] = (options.get("options", "") +
                              f" -c idle_in_transaction_session_timeout={idle}").strip()
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # SQLite is shared by the web process and several q2 worker processes: WAL lets readers
        # run beside the writer, the busy timeout waits instead of failing with "database is
        # locked", and IMMEDIATE takes the write lock at BEGIN so two transactions can never
        # deadlock upgrading read locks.
        config["CONN_MAX_AGE"] = 0 if "pytest" in sys.modules else 600
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;"
            ),
        }
        # A file, not :memory:, so that worker subprocesses in tests see the same database.
        # Per process, so two test sessions on one machine never share a database file.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
SERVESTATIC_USE_FINDERS = DEBUG
# Artifacts: the local file system under ARTIFACTS_ROOT by default; S3-compatible storage
# (AWS, MinIO, Ceph...) through django-storages when SWITCHYARD_ARTIFACTS_STORAGE=s3, which
# every machine running a worker or the web must then share. See docs/operations.md.
ARTIFACTS_ROOT = Path(env_str("ARTIFACTS_ROOT", str(VAR_DIR / "artifacts")))
ARTIFACTS_STORAGE_KIND = env_str("SWITCHYARD_ARTIFACTS_STORAGE", "filesystem")
if ARTIFACTS_STORAGE_KIND == "filesystem":
    _ARTIFACTS_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        # Never served by URL: downloads go through permission-checked views.
        "OPTIONS": {"location": str(ARTIFACTS_ROOT), "base_url": None,
                    "file_permissions_mode": 0o640, "directory_permissions_mode": 0o750},
    }
elif ARTIFACTS_STORAGE_KIND == "s3":
    _ARTIFACTS_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("SWITCHYARD_S3_BUCKET", "switchyard-artifacts"),
            "endpoint_url": env_str("SWITCHYARD_S3_ENDPOINT_URL", None),
            "region_name": env_str("SWITCHYARD_S3_REGION", None),
            "access_key": env_str("SWITCHYARD_S3_ACCESS_KEY_ID", None),
            "secret_key": env_str("SWITCHYARD_S3_SECRET_ACCESS_KEY", None),
            "location": env_str("SWITCHYARD_S3_PREFIX", ""),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    raise ImproperlyConfigured(
        f"SWITCHYARD_ARTIFACTS_STORAGE must be 'filesystem' or 's3', not "
        f"{ARTIFACTS_STORAGE_KIND!r}"
    )
# Bearer token for /metrics; empty turns the endpoint off.
SWITCHYARD_METRICS_TOKEN = env_str("SWITCHYARD_METRICS_TOKEN", "")
SWITCHYARD_ARTIFACT_MAX_FILE_MB = env_int("SWITCHYARD_ARTIFACT_MAX_FILE_MB", 100, minimum=1)
SWITCHYARD_ARTIFACT_MAX_RUN_MB = env_int("SWITCHYARD_ARTIFACT_MAX_RUN_MB", 1024, minimum=1)
SWITCHYARD_ARTIFACT_MAX_FILES = env_int("SWITCHYARD_ARTIFACT_MAX_FILES", 500, minimum=1)
# Pixels of an image the comparison accepts (width x height); larger ones are not compared.
SWITCHYARD_DIFF_MAX_PIXELS = env_int("SWITCHYARD_DIFF_MAX_PIXELS", 40_000_000, minimum=1)

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _ARTIFACTS_STORAGE,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "servestatic.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
X_FRAME_OPTIONS = "DENY"

# --- Switchyard engine -------------------------------------------------------------------------

# Where each attempt gets its fresh working directory.
SWITCHYARD_WORK_ROOT = Path(env_str("SWITCHYARD_WORK_ROOT", str(VAR_DIR / "work")))
# Keep attempt working directories after they finish (debugging); default removes them.
SWITCHYARD_KEEP_WORKDIRS = env_bool("SWITCHYARD_KEEP_WORKDIRS", False)
# Seconds between SIGTERM and SIGKILL when a command is timed out or cancelled.
SWITCHYARD_KILL_GRACE = env_float("SWITCHYARD_KILL_GRACE", 5.0, minimum=0.0)
# Log batching: flush after this many lines or this many seconds, whichever comes first.
SWITCHYARD_LOG_BATCH_LINES = env_int("SWITCHYARD_LOG_BATCH_LINES", 2000, minimum=1)
SWITCHYARD_LOG_BATCH_SECONDS = env_float("SWITCHYARD_LOG_BATCH_SECONDS", 0.25, minimum=0.01)
# Per-execution cap on stored log bytes; past it a truncation notice is stored instead.
SWITCHYARD_LOG_MAX_BYTES = env_int("SWITCHYARD_LOG_MAX_BYTES", 50 * 1024 * 1024, minimum=1024)
# Longest single line kept; longer lines are cut with a marker.
SWITCHYARD_LOG_MAX_LINE = env_int("SWITCHYARD_LOG_MAX_LINE", 16 * 1024, minimum=80)
# Bound on stored error text (with a visible truncation marker).
SWITCHYARD_ERROR_MAX_CHARS = env_int("SWITCHYARD_ERROR_MAX_CHARS", 4000, minimum=200)
# Largest result.json accepted as an execution's result.
SWITCHYARD_RESULT_MAX_BYTES = env_int("SWITCHYARD_RESULT_MAX_BYTES", 1024 * 1024, minimum=1024)
# Default task timeout when a task does not set one.
SWITCHYARD_DEFAULT_TIMEOUT = env_int("SWITCHYARD_DEFAULT_TIMEOUT", 3600, minimum=1)
SWITCHYARD_HEARTBEAT_SECONDS = env_float("SWITCHYARD_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
# A running execution whose heartbeat is older than this lost its worker (reaper).
SWITCHYARD_LEASE_SECONDS = env_float("SWITCHYARD_LEASE_SECONDS", 60.0, minimum=1.0)
# A queued execution no worker claimed within this many seconds is handed to the queue again:
# how long work that a dead machine had taken from the queue (but not started) waits. A
# duplicate message is harmless (the claim is compare-and-set).
SWITCHYARD_REDELIVER_SECONDS = env_float("SWITCHYARD_REDELIVER_SECONDS", 60.0, minimum=1.0)
# Worker registry: beat interval, and silence after which a worker counts as dead.
SWITCHYARD_WORKER_BEAT_SECONDS = env_float("SWITCHYARD_WORKER_BEAT_SECONDS", 10.0, minimum=0.1)
SWITCHYARD_WORKER_DEAD_SECONDS = env_float("SWITCHYARD_WORKER_DEAD_SECONDS", 45.0, minimum=1.0)
# Pages ask "is any worker alive?" for the no-worker banner; the web process keeps the answer
# this long (0: ask the database every time).
SWITCHYARD_WORKER_STATUS_CACHE_SECONDS = env_float("SWITCHYARD_WORKER_STATUS_CACHE_SECONDS", 5.0,
                                                   minimum=0.0)
# Modules whose @switchyard_callable functions python tasks may run.
SWITCHYARD_CALLABLE_MODULES = env_list("SWITCHYARD_CALLABLE_MODULES", ["jobs.builtin_callables"])
# Run commands inside bubblewrap (read-only root, only the working directory writable, no
# network unless the task allows it) when bwrap is installed. A task can also ask for it.
SWITCHYARD_BWRAP = env_bool("SWITCHYARD_BWRAP", False)
# How often some worker runs the reaper (lease expiry, retries due, deadlines, approvals).
SWITCHYARD_REAP_SECONDS = env_float("SWITCHYARD_REAP_SECONDS", 15.0, minimum=1.0)
# A schedule slot found due later than this (every worker was down) is skipped, not launched.
SWITCHYARD_SCHEDULE_GRACE_SECONDS = env_int("SWITCHYARD_SCHEDULE_GRACE_SECONDS", 300, minimum=1)
if SWITCHYARD_LEASE_SECONDS < 3 * SWITCHYARD_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "SWITCHYARD_LEASE_SECONDS must be at least 3 x SWITCHYARD_HEARTBEAT_SECONDS, or healthy "
        f"runs get reaped (lease {SWITCHYARD_LEASE_SECONDS:g} s, heartbeat "
        f"{SWITCHYARD_HEARTBEAT_SECONDS:g} s)"
    )
# How often the stop check (cancel requests) runs while a command executes.
SWITCHYARD_STOP_CHECK_SECONDS = env_float("SWITCHYARD_STOP_CHECK_SECONDS", 1.0, minimum=0.05)

# django-q2. Our own timeouts and heartbeats govern executions, so q2 must neither kill a healthy
# long run (`timeout` far beyond any task timeout) nor hand it to a second worker (`retry` longer
# still, as q2 requires). A delivery lost with its worker is recovered by Switchyard's lease
# reaper, not by q2 re-delivery; a duplicate delivery finds the execution claimed and returns.
Q_CLUSTER = {
    "name": "switchyard",
    "orm": "default",
    "workers": env_int("SWITCHYARD_WORKERS", 2, minimum=1),
    "timeout": 30 * 24 * 3600,
    "retry": 31 * 24 * 3600,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": env_int("SWITCHYARD_Q_SAVE_LIMIT", 250, minimum=-1),
    "poll": env_float("SWITCHYARD_Q_POLL", 0.2, minimum=0.01),
    "catch_up": False,
    "recycle": 500,
    "label": "Task queue",
}

# LOG_FORMAT=json writes one JSON object per line (timestamp, level, logger, message, run_id,
# execution_id, exception) for log shippers; the default is one readable line.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logging.ContextFilter"}},
    "formatters": {
        "plain": {"()": "config.logging.PlainFormatter",
                  "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(run_id)s "
                           "%(execution_id)s %(process)d",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Webhooks (hooks/) -------------------------------------------------------------------------
# Allow webhook targets on loopback, private and link-local addresses (tests, internal receivers).
SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = env_bool("SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE", False)
# Seconds each webhook request may take to connect, send, and answer.
SWITCHYARD_WEBHOOKS_TIMEOUT = env_float("SWITCHYARD_WEBHOOKS_TIMEOUT", 10.0, minimum=1.0)
# Where people reach Switchyard; links in webhook payloads start with it.
SWITCHYARD_BASE_URL = env_str("SWITCHYARD_BASE_URL", "http://127.0.0.1:8000")

# Server-sent event streams (runs.streams).
SWITCHYARD_STREAM_POLL_SECONDS = env_float("SWITCHYARD_STREAM_POLL_SECONDS", 0.5, minimum=0.05)
SWITCHYARD_STREAM_KEEPALIVE_SECONDS = env_float("SWITCHYARD_STREAM_KEEPALIVE_SECONDS", 15.0,
                                                minimum=1.0)
SWITCHYARD_STREAM_MAX_SECONDS = env_float("SWITCHYARD_STREAM_MAX_SECONDS", 3600.0, minimum=1.0)
SWITCHYARD_STREAM_RETRY_MS = env_int("SWITCHYARD_STREAM_RETRY_MS", 3000, minimum=0)
SWITCHYARD_STREAM_DB_THREADS = env_int("SWITCHYARD_STREAM_DB_THREADS", 4, minimum=1)
