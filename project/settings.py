"""Settings, twelve-factor style: everything that differs between machines is an env var.

DATABASE_URL  default: SQLite file db.sqlite3 in the project folder
REDIS_URL     unset: django-q2 ORM broker + local memory cache; set: Redis broker + Redis cache
SECRET_KEY    unset: a random key kept in .local/secret_key (fine for one machine, not a fleet)
DEBUG         "1"/"true" to enable; default off
ALLOWED_HOSTS comma separated; default 127.0.0.1,localhost
HTTPS         "1" behind TLS: secure cookies, HSTS, SSL redirect (what `check --deploy` wants)
LOG_FORMAT    "plain" (default) or "json": one JSON object a line, with a record's extra fields
LLMQUEUE_*    any llmqueue setting (see llmqueue/conf.py)
A value that does not parse fails `manage.py check` with its name (project/env.py,
llmqueue/checks.py); so does an LLMQUEUE_* name that llmqueue does not know.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF

from project.env import env_bool, env_choice, env_int, problems
from project.prometheus_dir import multiproc_dir_setup

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    # One machine, no configuration: keep a random key beside the SQLite file so that sessions
    # survive restarts. A fleet must set SECRET_KEY (every process needs the same one).
    path = LOCAL_DIR / "secret_key"
    if not path.exists():
        LOCAL_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", LOG_LEVELS)
Q_LOG_LEVEL = env_choice("Q_LOG_LEVEL", "WARNING", LOG_LEVELS)
LOG_FORMAT = env_choice("LOG_FORMAT", "PLAIN", ("PLAIN", "JSON"))
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "llmqueue",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise, async-capable (project.middleware): no thread per request under ASGI
    "project.middleware.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last but for the metrics: it answers a locked-out login (django-axes' advice).
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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

# --- database ---------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Several processes write (web server, every drain worker): WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock at BEGIN so a transaction never has to upgrade a
    # read lock (the cause of "database is locked" that no busy timeout can cure), and the busy
    # timeout makes writers queue instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache and broker -------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The workers run one long "drain" task each; one more runs the fleet's health checker (a long
# task too, on one host at a time), and one stays free for housekeeping, so that busy drains
# never starve the schedules.
LLMQUEUE_DRAINS_PER_HOST = env_int("LLMQUEUE_DRAINS_PER_HOST", 2, minimum=1)
# llmqueue's own settings by name, over the LLMQUEUE_* environment (llmqueue/conf.py); tests
# override them here. Defined, even empty: a missing setting costs an exception on every read.
LLMQUEUE: dict[str, object] = {}
Q_CLUSTER = {
    "name": os.environ.get("Q_CLUSTER_NAME", "llmqueue"),
    "workers": LLMQUEUE_DRAINS_PER_HOST + 2,
    # A drain ends itself after LLMQUEUE_DRAIN_MAX_SECONDS (default 300); the timeout is a backstop.
    "timeout": 1800,
    "retry": 1900,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 200,
    "catch_up": False,
    "poll": 0.2,
    "label": "Django Q2",
    "log_level": Q_LOG_LEVEL,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- auth, API ----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins (the pages' and the admin's) lock out the pair of user name and address: ten
# wrong passwords in a row, then 15 minutes of 429s for that user from that address, while the
# user can still log in from elsewhere and the address can still try other users (a lockout
# per user alone would let anyone lock anyone out). A success resets the count.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Every successful login would be a row: the failures are what a lockout needs.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no start-up banner in every manage.py command
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "llmqueue.api.auth.KeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "llmqueue.api.filters.Pagination",
    "PAGE_SIZE": 50,
    # JSON only: form-encoded bodies cannot carry a job's payload, so they are not offered.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "llmqueue.api.schema.ErrorsAutoSchema",
    "EXCEPTION_HANDLER": "llmqueue.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "llmqueue API",
    "DESCRIPTION": "A durable, prioritized, rate-limited queue in front of LLM endpoints.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar): no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A null field is "null", not an enum member (DRF's choices with allow_null).
    "ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Two "status" fields: a job's and a batch's.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "llmqueue.models.Status",
        "BatchStatusEnum": "llmqueue.models.BatchStatus",
    },
}

# A bulk request of 1000 jobs is well past Django's default 2.5 MB; the API enforces its own
# per-job limit (LLMQUEUE_MAX_PAYLOAD_BYTES) and answers 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024 * 1024)

# --- security -----------------------------------------------------------------------------------
HTTPS = env_bool("HTTPS")
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): our own files only. The pages keep no inline script or
# style (app.js sets what must be computed); the charts are SVG drawn by app.js.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- static, i18n -------------------------------------------------------------------------------
STATIC_URL = "static/"
# collectstatic writes here for production; WhiteNoise serves it (and warns if it is missing).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", LOCAL_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# The Files API's uploads and a batch's output files (llmqueue.jobs.files), via default_storage.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", LOCAL_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- logging ------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # One object a line for log collectors; the worker's records about a job carry its
        # job_id, endpoint and outcome as fields of their own (``extra=``).
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger", "process": "pid"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT.lower()}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "django-q": {"level": Q_LOG_LEVEL},
    },
}
# `make run` serves the admin's CSS without a collectstatic step.
WHITENOISE_USE_FINDERS = True

# --- metrics ------------------------------------------------------------------------------------
# Web processes and drain workers each count their own events; prometheus_client's multiprocess
# mode adds them up at scrape time from one directory per host (llmqueue.metrics). It must be
# set before prometheus_client is first imported, which happens after the settings load.
# PROMETHEUS_MULTIPROC_DIR (default .local/prometheus) is a root: each deployment (database) on
# each host and boot counts in a subdirectory of its own (project/prometheus_dir.py).
PROMETHEUS_MULTIPROC_DIR = multiproc_dir_setup(
    default_root=LOCAL_DIR / "prometheus", database=DATABASES["default"]
)

# Environment switches above that did not parse; llmqueue.checks reports them by name.
ENV_ERRORS = problems
