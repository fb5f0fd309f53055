"""Where this process keeps its Prometheus counts: one directory per host, database and boot.

prometheus_client's multiprocess mode keeps each process's counters in files of
``PROMETHEUS_MULTIPROC_DIR``, and a scrape adds up every file there. A directory shared by two
deployments (two databases run from one checkout) adds one's counts to the other's; one that
outlives the machine's boot holds files of pids that mean nothing any more. So the operator's
directory (``PROMETHEUS_MULTIPROC_DIR``, default ``.local/prometheus``) is a root, and each
process counts in a subdirectory named for its host, its database and the boot:

    <root>/<host>-db<hash of engine, host, port, name>-boot<boot id>

Every process of one deployment on one host (web server, qcluster workers, ``manage.py
llmqueue_metrics``) computes the same name, so they share it without being told; another
database gets another. Files of processes that died are folded into an archive at scrape time
(``llmqueue.metrics``), so restarts within a boot keep the counters going up.

Plain standard library: the settings call it before prometheus_client is imported.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the environment variable that keeps the operator's root for child processes (the settings
#: rewrite PROMETHEUS_MULTIPROC_DIR to the subdirectory, which the children inherit)
ROOT_ENV = "PROMETHEUS_MULTIPROC_ROOT"


def database_identity(database: Mapping[str, Any]) -> str:
    """A short hash that names a database: its engine, server and name (not the user)."""
    name = str(database.get("NAME") or "")
    if str(database.get("ENGINE", "")).endswith("sqlite3") and name != ":memory:":
        name = os.path.realpath(name)
    parts = [database.get("ENGINE"), database.get("HOST") or "", database.get("PORT") or "", name]
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


def boot_id() -> str:
    """This boot of the machine (Linux); pids of an earlier boot name other processes."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    except OSError:
        return "unknown"


def multiproc_dir(*, root: str | os.PathLike[str], database: Mapping[str, Any]) -> Path:
    """The subdirectory of ``root`` for this host, ``database`` and boot."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    return Path(root) / f"{host}-db{database_identity(database)}-boot{boot_id()}"


def multiproc_dir_setup(*, default_root: Path, database: Mapping[str, Any]) -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at this deployment's subdirectory (made if missing).

    The root is PROMETHEUS_MULTIPROC_ROOT if a parent process set it, else the operator's
    PROMETHEUS_MULTIPROC_DIR, else ``default_root``; it is kept in PROMETHEUS_MULTIPROC_ROOT so
    that a child with another database (a test cluster, say) nests nothing.
    """
    root = (
        os.environ.get(ROOT_ENV) or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(default_root)
    )
    path = multiproc_dir(root=root, database=database)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ROOT_ENV] = root
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path
