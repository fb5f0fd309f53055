"""Re-encrypt every stored secret with the first key of LLMQUEUE_FIELD_KEYS.

To rotate: put the new key first (``LLMQUEUE_FIELD_KEYS=new,old``) on every process, run
this once, then drop the old key. Safe to run again; it prints counts, never keys.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from llmqueue.endpoints.keys import endpoint_keys_rotate


class Command(BaseCommand):
    help = "Re-encrypt every endpoint API key with the first key of LLMQUEUE_FIELD_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        n = endpoint_keys_rotate()
        self.stdout.write(f"re-encrypted {n} endpoint API key(s) with the first field key")
