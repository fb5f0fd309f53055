"""The ceiling of HTTP clients against the stand-in endpoint: calls/s and client CPU per call.

    .venv/bin/python bench/upstream_clients.py [--inflight 32,64,128] [--calls 2000]
                                               [--latency-ms 100]

Starts ``python -m llmqueue.standin`` on a free port (its own process, so that its CPU is not
the client's), then, for each in-flight level N, runs ``--calls`` POST /v1/chat/completions
with exactly N calls in flight (N worker coroutines sharing one counter) through:

    httpx default    one httpx.AsyncClient with httpx's own transport (limits = N)
    httpx+aiohttp    one httpx.AsyncClient over httpx_aiohttp.AiohttpTransport (limits = N)
    httpx transport  httpx.Request objects sent straight to that transport, without the
                     AsyncClient: the way llmqueue.calls.client calls endpoints
    aiohttp          one aiohttp.ClientSession, without httpx (what the transport costs)

and prints calls/s, the ideal N / latency, and CPU per call of the client process
(``time.process_time``) and of the stand-in (``/proc/<pid>/stat``): on a 2-core machine the two
together bound what any client can reach. ``ceiling()`` is the best calls/s of "httpx
transport" and "aiohttp", for other benchmarks (bench/throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parent.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class StandIn:
    base_url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces and parentheses: split after the last ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # stat fields 14 and 15


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def standin_process(
    *, latency_ms: float, latency_per_input_ms: float = 0.0, ready_s: float = 15.0
) -> Iterator[StandIn]:
    """Run the stand-in endpoint in a subprocess; yields its base URL and pid."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmqueue.standin",
            "--port",
            str(port),
            "--latency-ms",
            f"{latency_ms:g}",
            "--latency-per-input-ms",
            f"{latency_per_input_ms:g}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the stand-in did not answer within {ready_s:g} s"
                    ) from None
                time.sleep(0.05)
        yield StandIn(base_url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def standin(*, latency_ms: float, ready_s: float = 15.0) -> Iterator[str]:
    """Run the stand-in endpoint in a subprocess; yields its base URL (``http://.../v1``)."""
    with standin_process(latency_ms=latency_ms, ready_s=ready_s) as server:
        yield server.base_url


def chat_payload(i: int) -> dict[str, Any]:
    """A small chat request, distinct per call (so that no cache could answer it)."""
    return {"model": "echo", "messages": [{"role": "user", "content": f"hello {i}"}]}


def _limits(inflight: int) -> httpx.Limits:
    return httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)


class Client:
    """One way to POST a JSON body and read the JSON answer, with a pool of ``inflight``."""

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class HttpxClient(Client):
    """``httpx.AsyncClient`` over the given transport."""

    def __init__(self, inflight: int, *, aiohttp: bool) -> None:
        transport = AiohttpTransport(limits=_limits(inflight)) if aiohttp else None
        self.client = httpx.AsyncClient(limits=_limits(inflight), transport=transport, timeout=60)

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        response = await self.client.post(url, json=body)
        response.raise_for_status()
        return response.json()

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxTransport(Client):
    """An ``httpx.Request`` sent straight to the aiohttp transport: llmqueue.calls.client's way."""

    def __init__(self, inflight: int) -> None:
        self.transport = AiohttpTransport(limits=_limits(inflight))
        self.timeout = httpx.Timeout(60.0).as_dict()
        self.urls: dict[str, httpx.URL] = {}  # parsed once, as llmqueue.calls.client's routes do

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        if url not in self.urls:
            self.urls[url] = httpx.URL(url)
        request = httpx.Request(
            "POST", self.urls[url], json=body, extensions={"timeout": self.timeout}
        )
        response = await self.transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        response.raise_for_status()
        return response.json()

    async def aclose(self) -> None:
        await self.transport.aclose()


class Aiohttp(Client):
    """aiohttp alone, without httpx: what the transport costs underneath."""

    def __init__(self, inflight: int) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight))

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        async with self.session.post(url, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def aclose(self) -> None:
        await self.session.close()


CLIENTS: dict[str, Callable[[int], Client]] = {
    "httpx default": lambda n: HttpxClient(n, aiohttp=False),
    "httpx+aiohttp": lambda n: HttpxClient(n, aiohttp=True),
    "httpx transport": HttpxTransport,
    "aiohttp": Aiohttp,
}
#: the clients the ceiling is the best of: llmqueue's own, and aiohttp without httpx
CEILING_CLIENTS = ("httpx transport", "aiohttp")


async def _calls(client: Client, url: str, *, calls: int, inflight: int) -> None:
    numbers = iter(range(calls))  # shared: each worker takes the next number until none is left

    async def worker() -> None:
        for i in numbers:
            await client.post(url, chat_payload(i))

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def _measure(
    factory: Callable[[int], Client],
    base_url: str,
    *,
    calls: int,
    inflight: int,
    server_pid: int | None,
) -> dict[str, Any]:
    url = f"{base_url}/chat/completions"

    def server_cpu() -> float:
        return cpu_seconds(server_pid) if server_pid else 0.0

    client = factory(inflight)
    try:
        # One untimed round opens the connections: the ceiling is the steady state.
        await _calls(client, url, calls=inflight, inflight=inflight)
        cpu0, server0, t0 = time.process_time(), server_cpu(), time.perf_counter()
        await _calls(client, url, calls=calls, inflight=inflight)
        seconds = time.perf_counter() - t0
        cpu, server_used = time.process_time() - cpu0, server_cpu() - server0
    finally:
        await client.aclose()
    result = {
        "inflight": inflight,
        "calls": calls,
        "seconds": seconds,
        "calls_per_s": calls / seconds,
        "cpu_ms_per_call": cpu * 1000 / calls,
    }
    if server_pid:
        result["server_cpu_ms_per_call"] = server_used * 1000 / calls
    return result


def measure(
    client: str, base_url: str, *, calls: int, inflight: int, server_pid: int | None = None
) -> dict[str, Any]:
    """Run ``calls`` calls with ``inflight`` in flight through the client named ``client``;
    with ``server_pid``, the server's CPU per call too."""
    result = asyncio.run(
        _measure(CLIENTS[client], base_url, calls=calls, inflight=inflight, server_pid=server_pid)
    )
    return {"client": client, **result}


def ceiling(
    base_url: str, *, calls: int, inflight: int, server_pid: int | None = None
) -> dict[str, Any]:
    """The best calls/s of ``CEILING_CLIENTS`` against ``base_url`` (the result of that client)."""
    runs = [
        measure(name, base_url, calls=calls, inflight=inflight, server_pid=server_pid)
        for name in CEILING_CLIENTS
    ]
    return max(runs, key=lambda r: r["calls_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", default="32,64,128", help="comma separated levels")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per client and level")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="stand-in latency")
    args = parser.parse_args()
    levels = [int(n) for n in args.inflight.split(",")]
    print(
        f"{'client':<15} {'in-flight':>9} {'calls':>6} {'seconds':>8} {'calls/s':>8} "
        f"{'ideal/s':>8} {'client CPU ms/call':>18} {'stand-in CPU ms/call':>20}"
    )
    with standin_process(latency_ms=args.latency_ms) as server:
        for inflight, client in itertools.product(levels, CLIENTS):
            r = measure(
                client, server.base_url, calls=args.calls, inflight=inflight, server_pid=server.pid
            )
            ideal = inflight * 1000 / args.latency_ms if args.latency_ms else float("inf")
            print(
                f"{client:<15} {inflight:>9} {r['calls']:>6} {r['seconds']:>8.2f} "
                f"{r['calls_per_s']:>8.0f} {ideal:>8.0f} {r['cpu_ms_per_call']:>18.2f} "
                f"{r['server_cpu_ms_per_call']:>20.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
