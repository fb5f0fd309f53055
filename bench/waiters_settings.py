"""The project's settings, with django-prometheus' database wrapper: bench/waiters.py counts
every query the web process makes (``django_db_execute_total``)."""

from project.settings import *  # noqa: F403

DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.sqlite3"  # noqa: F405
