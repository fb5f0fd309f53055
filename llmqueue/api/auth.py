"""How the REST API knows its caller: ``Authorization: Bearer <key>`` (what the OpenAI SDKs
send) or ``Authorization: Token <key>``, with an API key (llmqueue.keys) or, for the clients
made before API keys, a DRF token (``manage.py drf_create_token USER``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from llmqueue.keys import apikey_authenticate, is_apikey
from llmqueue.keys.guard import client_address, key_failure_record, key_guessing_wait

SCHEMES = (b"bearer", b"token")


class KeyAuthentication(BaseAuthentication):
    """Bearer or Token, API key or DRF token. Wrong keys count against the caller's address
    (llmqueue.keys.guard): past the limit, every key from it is answered 429 for a while."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in SCHEMES:
            return None  # not ours: the session may still authenticate
        address = client_address(request._request)
        wait = key_guessing_wait(address=address)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="Too many wrong API keys from here.")
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header takes one key.")
        try:
            plain = parts[1].decode()
        except UnicodeDecodeError:
            plain = ""
        found = self._resolve(plain)
        if found is None:
            key_failure_record(address=address)
            # Never name the key: it may be a real one pasted into the wrong place.
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        return found

    @staticmethod
    def _resolve(plain: str) -> tuple[Any, Any] | None:
        if is_apikey(plain):
            key = apikey_authenticate(plain=plain)
            return (key.owner, key) if key is not None else None
        if not plain or len(plain) > 40:  # DRF tokens are 40 hex characters
            return None
        token = Token.objects.select_related("user").filter(key=plain).first()
        if token is None or not token.user.is_active:
            return None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


class KeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI document describes KeyAuthentication (drf-spectacular finds it by its
    target class once this module is imported)."""

    target_class = KeyAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (lq_...) or a DRF token. `Authorization: Token <key>` "
            "is accepted too.",
        }
