"""First-run set-up for one machine: a local admin account and (optionally) the demo endpoint.

    manage.py llmqueue_bootstrap --demo-url http://127.0.0.1:8000/demo/v1

Creates the superuser "admin" with a random password and prints it, only when no superuser
exists yet (so the password is shown once). Registers the demo echo endpoint when asked.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator

from llmqueue.models import Endpoint
from llmqueue.standin.echo import ECHO_MODEL

DEMO_NAME = "demo-echo"


class Command(BaseCommand):
    help = "Create a local admin (first run only) and register the demo echo endpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo-url", help="base URL of the demo endpoint, e.g. http://127.0.0.1:8000/demo/v1"
        )
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, demo_url: str | None, username: str, **options: Any) -> None:
        if demo_url:
            try:
                URLValidator(schemes=["http", "https"])(demo_url)
            except ValidationError:
                raise CommandError(f"--demo-url: {demo_url!r} is not an http(s) URL") from None
        users = get_user_model()
        if not users.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            users.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(
                self.style.SUCCESS(
                    f"\n  Created the local admin account (shown once, keep it):\n"
                    f"    username: {username}\n    password: {password}\n"
                    f"  Reset it any time: python manage.py changepassword {username}\n"
                )
            )
        if demo_url:
            endpoint, created = Endpoint.objects.update_or_create(
                name=DEMO_NAME,
                defaults={
                    "base_url": demo_url.rstrip("/"),
                    "served_models": [ECHO_MODEL],
                    "timeout_s": 30.0,
                },
            )
            verb = "Registered" if created else "Kept"
            self.stdout.write(
                f"  {verb} the DEMO endpoint {endpoint.name!r} at {endpoint.base_url}: "
                f"model {ECHO_MODEL!r}, an echo, not an LLM"
            )
