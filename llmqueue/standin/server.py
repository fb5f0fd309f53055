"""A stand-in LLM endpoint: a real OpenAI-compatible HTTP server for tests and benchmarks.

It answers like ``llmqueue.standin.echo``, after a configurable latency, and can be told to fail:

    python -m llmqueue.standin --port 9001 --latency-ms 100

    POST /v1/chat/completions | /v1/completions | /v1/embeddings   echo answer
    GET  /v1/models                                                 the models it serves
    POST /control   {"latency_ms": 100, "latency_per_input_ms": 0.2, "status": 503,
                     "retry_after": "2", "fail_next": 3, "models_status": 503}
    GET  /log       every call so far: {"calls": [[time, path, status, model], ...],
                    "inputs": [inputs of each call, ...], "max_in_flight": n}
    POST /reset     clears the log and every failure setting

``status`` makes every call answer that status (with an OpenAI-shaped error body);
``fail_next`` fails only the next N calls; ``models_status`` fails the health route.
A call takes ``latency_ms`` plus ``latency_per_input_ms`` for each of its inputs (an embedding
call's ``input`` list; every other call has one), as a batching server's would.

Embeddings answer one deterministic vector per input text (``echo``), so a merged call's
answers can be checked input by input. An embedding call any of whose inputs contains
``POISON`` is rejected whole with a 400 naming that input's index, as a server rejects a
request with one bad input (too long, say): the way to test that one bad job among merged
ones fails alone.

Runs in its own process, so that its CPU is not the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

from llmqueue.calls.paths import KIND_PATHS, V1
from llmqueue.standin.echo import ECHO_MODEL, echo_answer, models_answer

#: an embedding input containing this is rejected with a 400 (see the module docstring)
POISON = "POISON"

#: OpenAI's path -> the kind it answers (``llmqueue.calls.paths``, with the /v1 prefix)
ROUTES = {V1 + path: kind for kind, path in KIND_PATHS.items()}


def _prompt(body: dict[str, Any]) -> str:
    """What a call asked: the last chat message, or the completion prompt or embedding input."""
    messages = body.get("messages") or [{}]
    text = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return str(text if text is not None else body.get("prompt", body.get("input", "")))


class StandIn:
    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        latency_per_input_ms: float = 0.0,
        models: list[str] | None = None,
    ) -> None:
        self.models = models or [ECHO_MODEL]
        self.base_settings = {
            "latency_ms": latency_ms,
            "latency_per_input_ms": latency_per_input_ms,
        }
        self.settings: dict[str, Any] = dict(self.base_settings)
        self.log: list[list[Any]] = []
        self.inputs: list[int] = []  # beside the log: each call's number of inputs
        self.in_flight = 0
        self.max_in_flight = 0
        #: the prompt of each call answered 200, in order (a soak checks every one arrived)
        self.prompts: list[str] = []

    def _failure(self) -> tuple[int, dict[str, str]] | None:
        s = self.settings
        headers = {"Retry-After": str(s["retry_after"])} if s.get("retry_after") is not None else {}
        if s.get("fail_next"):
            s["fail_next"] -= 1
            return int(s.get("fail_status", 503)), headers
        if s.get("status"):
            return int(s["status"]), headers
        return None

    async def call(self, request: web.Request) -> web.Response:
        kind = ROUTES[request.path]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            inputs = body.get("input") if kind == "embedding" else None
            n = len(inputs) if isinstance(inputs, list) else 1
            s = self.settings
            delay = float(s.get("latency_ms", 0)) + float(s.get("latency_per_input_ms", 0)) * n
            if delay:
                await asyncio.sleep(delay / 1000)
            failure = self._failure()
            message = self.settings.get("message")
            if failure is None and kind == "embedding":
                items = inputs if isinstance(inputs, list) else [inputs]
                bad = [i for i, t in enumerate(items) if POISON in str(t)]
                if bad:
                    failure, message = (400, {}), f"input {bad[0]} is poisoned"
            if failure is not None:
                status, headers = failure
                self.log.append([time.time(), request.path, status, body.get("model")])
                self.inputs.append(n)
                message = message or f"stand-in says {status}"
                return web.json_response(
                    {"error": {"message": message, "code": status}}, status=status, headers=headers
                )
            self.log.append([time.time(), request.path, 200, body.get("model")])
            self.inputs.append(n)
            self.prompts.append(_prompt(body))
            return web.json_response(echo_answer(kind, body))
        finally:
            self.in_flight -= 1

    async def list_models(self, request: web.Request) -> web.Response:
        if self.settings.get("models_status"):
            status = int(self.settings["models_status"])
            return web.json_response({"error": {"message": "down"}}, status=status)
        return web.json_response(models_answer(self.models))

    async def control(self, request: web.Request) -> web.Response:
        self.settings.update(await request.json())
        return web.json_response(self.settings)

    async def reset(self, request: web.Request) -> web.Response:
        self.settings = dict(self.base_settings)
        self.log.clear()
        self.inputs.clear()
        self.prompts.clear()
        self.max_in_flight = 0
        return web.json_response({"ok": True})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(
                {
                    "calls": self.log,
                    "inputs": self.inputs,
                    "max_in_flight": self.max_in_flight,
                    "in_flight": self.in_flight,
                    "prompts": self.prompts,
                }
            ),
            content_type="application/json",
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in ROUTES:
            app.router.add_post(path, self.call)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/control", self.control)
        app.router.add_post("/reset", self.reset)
        app.router.add_get("/log", self.get_log)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-per-input-ms", type=float, default=0.0)
    parser.add_argument("--models", default=ECHO_MODEL, help="comma separated")
    args = parser.parse_args()
    standin = StandIn(
        latency_ms=args.latency_ms,
        latency_per_input_ms=args.latency_per_input_ms,
        models=args.models.split(","),
    )
    web.run_app(
        standin.app(), host=args.host, port=args.port, print=None, access_log=None, backlog=1024
    )
