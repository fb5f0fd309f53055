"""Settings for the test run: the project's, with this run's own django-q2 queue name.

A Redis broker may be shared with other runs (or a developer's `make run`); a queue name of
its own keeps this run's tasks away from their clusters. Test clusters get the same name.
"""

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("Q_CLUSTER_NAME", f"llmqueue-test-{uuid.uuid4().hex[:8]}")
# The test runner marks its environment: a process it starts (a cluster, a server) inherits it
os.environ.setdefault("TESTS_RUNNER_PID", str(os.getpid()))
# This run's Prometheus multiprocess directory, shared with the clusters it starts (they inherit
# the environment) and apart from a developer's `make run`.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llmqueue-prom-")
    atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

# This run's stored files (the Files API), shared with the clusters it starts, which write
# batches' output files.
if "MEDIA_ROOT" not in os.environ:
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="llmqueue-media-")
    atexit.register(shutil.rmtree, os.environ["MEDIA_ROOT"], ignore_errors=True)

# What the test runner counts in (a child inherits it: project.settings will have moved it)
os.environ.setdefault("TESTS_PROMETHEUS_DIR", os.environ["PROMETHEUS_MULTIPROC_DIR"])

from project.prometheus_dir import multiproc_dir_setup
from project.settings import *  # noqa: F403

# Runs side by side (two checkouts, two terminals) must not share one SQLite test file.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(LOCAL_DIR / f"test-{os.environ['Q_CLUSTER_NAME']}.sqlite3")  # noqa: F405
    }
# Every process of the run counts in the test database's directory, where the tests' scrapes
# read: the runner moves there (its DATABASE_URL names the database the test one is made
# from), and the processes it starts (clusters, servers, llmqueue_metrics) take its word for
# it (their DATABASE_URL may name the test database or not).
if os.environ["TESTS_RUNNER_PID"] == str(os.getpid()):
    _test_db = dict(DATABASES["default"])  # noqa: F405
    _test_db["NAME"] = _test_db.get("TEST", {}).get("NAME") or f"test_{_test_db['NAME']}"
    PROMETHEUS_MULTIPROC_DIR = multiproc_dir_setup(
        default_root=LOCAL_DIR / "prometheus",  # noqa: F405
        database=_test_db,
    )
    os.environ["TESTS_PROMETHEUS_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
else:
    PROMETHEUS_MULTIPROC_DIR = Path(os.environ["TESTS_PROMETHEUS_DIR"])
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
# PBKDF2's many rounds are the production choice; in tests they only cost time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
