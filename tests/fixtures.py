"""Fixtures. Integration ones start real processes: a stand-in LLM endpoint and a qcluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import make_endpoint, make_user

ROOT = Path(__file__).resolve().parent.parent

#: what the test cluster runs with: short leases and backoffs so that failures play out fast
CLUSTER_ENV = {
    "LLMQUEUE_LEASE_S": "4",
    "LLMQUEUE_HEARTBEAT_S": "0.5",
    "LLMQUEUE_SLOT_STALE_S": "2",
    "LLMQUEUE_DRAIN_LINGER_S": "2",
    "LLMQUEUE_BACKOFF_BASE_S": "0.05",
    "LLMQUEUE_BACKOFF_CAP_S": "0.4",
    "LLMQUEUE_DRAINS_PER_HOST": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture
def user(db: Any) -> Any:
    return make_user()


@pytest.fixture
def other_user(db: Any) -> Any:
    return make_user()


@pytest.fixture
def staff(db: Any) -> Any:
    return make_user(staff=True)


@pytest.fixture
def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff_api(staff: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


def logged_in(user: Any) -> Client:
    """A page client with ``user`` logged in."""
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def web(user: Any) -> Client:
    return logged_in(user)


@pytest.fixture
def admin_web(staff: Any) -> Client:
    return logged_in(staff)


@pytest.fixture
def echo_endpoint(db: Any) -> Any:
    return make_endpoint(name="echo-ep")


# --- the stand-in endpoint ----------------------------------------------------------------------


class StandInProcess:
    def __init__(self, *, port: int | None = None, latency_ms: float = 0.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmqueue.standin",
                "--port",
                str(self.port),
                "--latency-ms",
                str(latency_ms),
            ],
            cwd=ROOT,
        )
        wait_until(self._up, timeout=15, what="the stand-in to listen")

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=1):
                return True
        except OSError:
            return False

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def control(self, **settings: Any) -> Any:
        return self._post("/control", settings)

    def reset(self) -> None:
        self._post("/reset", {})

    def log(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/log", timeout=5) as r:
            return json.loads(r.read())

    def calls(self) -> list[list[Any]]:
        return self.log()["calls"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def _standin_process() -> Iterator[StandInProcess]:
    s = StandInProcess()
    yield s
    s.stop()


@pytest.fixture
def standin(_standin_process: StandInProcess) -> StandInProcess:
    _standin_process.reset()
    return _standin_process


# --- the cluster --------------------------------------------------------------------------------


def database_url() -> str:
    """The test database as a DATABASE_URL, for the subprocesses."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{s['NAME']}"


class Cluster:
    """A real `manage.py llmqueue_worker` (the qcluster) subprocess on the test database."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            **CLUSTER_ENV,
            **env,
            "DATABASE_URL": database_url(),
            "Q_CLUSTER_NAME": settings.Q_CLUSTER["name"],
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Cluster:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "llmqueue_worker"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # A cluster that cannot start (a failed system check, say) says so now, not as a
        # time-out later.
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise AssertionError(f"qcluster exited at once:\n{self.output()}")
        return self

    def kill(self) -> None:
        """kill -9 the whole cluster: guard, pusher, monitor and every worker."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._log.close()
            return
        os.killpg(self.proc.pid, signal.SIGINT)  # as Ctrl-C: the clean stop
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def cluster(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start qclusters with `cluster(**env)`; all are stopped at teardown."""
    started: list[Cluster] = []

    def start(**env: str) -> Cluster:
        c = Cluster(tmp_path / f"qcluster-{len(started)}.log", **env).start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


# --- the web server ------------------------------------------------------------------------------


class WebServer:
    """The web app under a real ASGI server (uvicorn, one worker: as in production, one
    process holds every waiting call) on the test database."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=ROOT,
            env={**os.environ, **env, "DATABASE_URL": database_url()},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._up, timeout=30, what="the web server to listen")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the web server exited:\n{self.output()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on /metrics (0 when absent)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def web_server(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    """Start web servers with `web_server(**env)`; all are stopped at teardown."""
    started: list[WebServer] = []

    def start(**env: str) -> WebServer:
        server = WebServer(tmp_path / f"web-{len(started)}.log", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
