"""Secrets at rest: a text field stored encrypted with Fernet (AES-128-CBC + HMAC-SHA256).

The keys come from ``LLMQUEUE_FIELD_KEYS``: comma-separated Fernet keys, the first encrypts
and every one decrypts (``MultiFernet``), so a key is rotated by putting the new one first,
running ``manage.py llmqueue_rotate_keys`` (every row re-encrypted with it), and dropping the
old one. Unset, the key is derived from ``SECRET_KEY`` (HKDF-SHA256): fine for one machine
in development, but then changing SECRET_KEY makes the stored keys unreadable. A fleet sets
FIELD_KEYS, the same on every process.

The model reads and writes plain text; only the column holds the token. An empty value
stays empty (no key is no secret), so ``filter(api_key="")`` keeps working.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

from llmqueue.conf import conf


class FieldKeyError(Exception):
    """A stored secret cannot be decrypted with any key of LLMQUEUE_FIELD_KEYS, or a key
    there is not a Fernet key. Never carries the secret or a key."""


def _derived_key(secret_key: str) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"llmqueue field keys")
    return base64.urlsafe_b64encode(kdf.derive(secret_key.encode()))


@functools.lru_cache(maxsize=8)
def _fernet(raw_keys: str, secret_key: str) -> MultiFernet:
    keys = [k.strip() for k in raw_keys.split(",") if k.strip()]
    if not keys:
        return MultiFernet([Fernet(_derived_key(secret_key))])
    fernets = []
    for i, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise FieldKeyError(
                f"LLMQUEUE_FIELD_KEYS: key #{i} is not a Fernet key (32 url-safe base64 bytes)"
            ) from None
    return MultiFernet(fernets)


def field_fernet() -> MultiFernet:
    """The keys in force now: LLMQUEUE_FIELD_KEYS, or one derived from SECRET_KEY."""
    return _fernet(conf.FIELD_KEYS or "", settings.SECRET_KEY)


def secret_encrypt(plain: str) -> str:
    if not plain:
        return ""
    return field_fernet().encrypt(plain.encode()).decode("ascii")


def secret_decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return field_fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError):
        raise FieldKeyError(
            "a stored secret (such as an endpoint's api_key) cannot be decrypted with any key "
            "in LLMQUEUE_FIELD_KEYS (or, unset, the key derived from SECRET_KEY): add the key "
            "it was encrypted with after the current one, then run "
            "`manage.py llmqueue_rotate_keys`"
        ) from None


def secret_rotate(token: str) -> str:
    """The token re-encrypted with the first key (decrypted with any)."""
    if not token:
        return ""
    return secret_encrypt(secret_decrypt(token))


class EncryptedTextField(models.TextField):
    """Plain text in Python, a Fernet token in the database."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else secret_decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return None if value is None else secret_encrypt(value)
