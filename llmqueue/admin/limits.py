"""Admin for rate limits: per-user limits and quotas, and the token buckets' live levels."""

from __future__ import annotations

import time
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from llmqueue.limits.ledger import LIMIT_FIELDS, usage_of
from llmqueue.models import TokenBucket, UserLimits
from llmqueue.policies.buckets import Bucket, BucketState, bucket_peek


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ["who", *LIMIT_FIELDS, "used_today"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
    fieldsets = [
        (
            None,
            {
                "fields": ["user"],
                "description": "Leave the user empty for the defaults "
                "that apply to everyone without a row of their own. Empty limits: none.",
            },
        ),
        (
            "Rates (per minute)",
            {"fields": ["submissions_per_minute", "requests_per_minute", "tokens_per_minute"]},
        ),
        (
            "Quotas (UTC days and months)",
            {"fields": ["jobs_per_day", "jobs_per_month", "tokens_per_day", "tokens_per_month"]},
        ),
    ]

    @admin.display(description="user", ordering="user__username")
    def who(self, obj: UserLimits) -> str:
        return obj.user.username if obj.user is not None else "(defaults for everyone)"

    @admin.display(description="used today (jobs / tokens)")
    def used_today(self, obj: UserLimits) -> str:
        if not obj.user_id:
            return "-"
        usage = usage_of(obj.user)["usage"]
        return f"{usage['jobs_today']} / {usage['tokens_today']}"


@admin.register(TokenBucket)
class TokenBucketAdmin(admin.ModelAdmin):
    list_display = ["scope", "key", "level", "capacity", "per_second", "last_refill"]
    list_filter = ["scope"]
    search_fields = ["key"]
    readonly_fields = [
        "scope",
        "key",
        "capacity",
        "refill_per_s",
        "tokens",
        "updated_at",
        "version",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # buckets are made by the limits they serve

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="level now")
    def level(self, obj: TokenBucket) -> str:
        state = BucketState(obj.tokens, obj.updated_at)
        now = bucket_peek(state, time.time(), Bucket(obj.capacity, obj.refill_per_s))
        return f"{now:.1f}"

    @admin.display(description="refill / s")
    def per_second(self, obj: TokenBucket) -> str:
        return f"{obj.refill_per_s:g}"

    @admin.display(description="last refill")
    def last_refill(self, obj: TokenBucket) -> str:
        ago = time.time() - obj.updated_at
        return f"paused {-ago:.0f} s more" if ago < 0 else f"{ago:.0f} s ago"
