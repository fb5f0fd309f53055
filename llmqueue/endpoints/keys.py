"""Endpoint API keys at rest (the field is ``llmqueue.db.fields.EncryptedTextField``)."""

from __future__ import annotations

from django.db import transaction

from llmqueue.models import Endpoint


def endpoint_keys_rotate() -> int:
    """Re-encrypt every endpoint's API key with the first field key; the number of keys.

    Each key is read (decrypted with whichever key works) and written back, which encrypts
    it with the first key. One transaction: a key that cannot be read stops the rotation
    with nothing half done (``FieldKeyError``, naming no secret).
    """
    n = 0
    with transaction.atomic():
        for pk, key in Endpoint.objects.exclude(api_key="").values_list("pk", "api_key"):
            n += Endpoint.objects.filter(pk=pk).update(api_key=key)
    return n
