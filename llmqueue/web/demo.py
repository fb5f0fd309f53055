"""The demo endpoint: an OpenAI-compatible echo under /demo/v1, on only when DEMO_ENDPOINT is set.

`make run` turns it on and registers it, so a newcomer's first job succeeds without an LLM.
"""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from llmqueue.conf import conf
from llmqueue.standin.echo import ECHO_MODEL, echo_answer, models_answer


def _enabled() -> None:
    if not conf.DEMO_ENDPOINT:
        raise Http404("the demo endpoint is off (LLMQUEUE_DEMO_ENDPOINT)")


@csrf_exempt
@require_POST
def demo_call(request: HttpRequest, kind: str) -> JsonResponse:
    _enabled()
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": {"message": "body is not JSON"}}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": {"message": "body must be a JSON object"}}, status=400)
    return JsonResponse(echo_answer(kind, body))


@require_GET
def demo_models(request: HttpRequest) -> JsonResponse:
    _enabled()
    return JsonResponse(models_answer([ECHO_MODEL]))
