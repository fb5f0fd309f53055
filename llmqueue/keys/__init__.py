"""API keys: made, checked and revoked here; the REST API's authentication and the key pages
call these.

A key reads ``lq_<prefix>_<secret>``. Only its SHA-256 digest is stored: the prefix finds the
row, and a constant-time comparison of digests proves the key. Django's password hashers are
made slow on purpose for guessable secrets; these keys carry 190 random bits, and a slow hash
would cost every API request tens of milliseconds for nothing.

    plain, key = apikey_create(owner=user, name="laptop")   # plain is shown once
    apikey_authenticate(plain=plain)                        # -> the ApiKey, or None
    apikey_revoke(owner=user, key_id=key.pk)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from llmqueue.models import ApiKey

#: what every key starts with: marks it as ours (secret scanners can match it)
KEY_MARK = "lq_"
#: last_used_at moves at most this often: one UPDATE a minute, not one a request
LAST_USED_EVERY = dt.timedelta(minutes=1)


def _digest(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def apikey_create(
    *, owner: Any, name: str, expires_at: dt.datetime | None = None
) -> tuple[str, ApiKey]:
    """A new key for ``owner``: the plain key (to show once, never stored) and its row."""
    prefix = secrets.token_hex(6)
    plain = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(24)}"
    key = ApiKey.objects.create(
        owner=owner, name=name, prefix=prefix, hashed_key=_digest(plain), expires_at=expires_at
    )
    return plain, key


def apikey_revoke(*, owner: Any, key_id: int) -> bool:
    """Revoke one of ``owner``'s keys; False when it has no such live key."""
    return bool(
        ApiKey.objects.filter(pk=key_id, owner=owner, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )


def is_apikey(plain: str) -> bool:
    """Whether ``plain`` has the shape of one of our keys (not whether it is valid)."""
    return plain.startswith(KEY_MARK) and plain.count("_") >= 2


def apikey_authenticate(*, plain: str) -> ApiKey | None:
    """The live key ``plain`` names (with its owner loaded), or None: unknown, wrong, revoked,
    expired, or its owner is inactive. Marks it used, at most once per LAST_USED_EVERY."""
    if not is_apikey(plain):
        return None
    prefix = plain[len(KEY_MARK) :].split("_", 1)[0]
    key = ApiKey.objects.select_related("owner").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.hashed_key, _digest(plain)):
        return None
    now = timezone.now()
    if not key.is_active(now) or not key.owner.is_active:
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY:
        # A conditional update: concurrent requests of one key write it once.
        stale = now - LAST_USED_EVERY
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=key.pk
        ).update(last_used_at=now)
        key.last_used_at = now
    return key


def apikeys_of(*, owner: Any) -> QuerySet[ApiKey]:
    """``owner``'s keys, newest first (revoked and expired ones too: the page shows them)."""
    return ApiKey.objects.filter(owner=owner).order_by("-created_at")
