"""The cache's admin: entries (search, filters), purges, and warming from a JSONL upload.

Registered from ``llmqueue.admin``. Thin: purges and warming are ``llmqueue.cache`` services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from llmqueue.cache.store import cache_purge
from llmqueue.errors import SubmitError
from llmqueue.jobs.warm import WARM_PRIORITY, cache_warm, warm_specs, warm_status
from llmqueue.models import CacheEntry


class HitsFilter(admin.SimpleListFilter):
    title = "hits"
    parameter_name = "hits"
    _ranges = {"0": (0, 0), "1": (1, 9), "10": (10, 99), "100": (100, None)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("0", "never"), ("1", "1 to 9"), ("10", "10 to 99"), ("100", "100 or more")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> Any:
        value = self.value()
        if value is None or value not in self._ranges:
            return queryset
        low, high = self._ranges[value]
        queryset = queryset.filter(hits__gte=low)
        return queryset if high is None else queryset.filter(hits__lte=high)


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("expired", "expired"), ("hour", "within an hour"), ("later", "later")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> Any:
        now = timezone.now()
        hour = now + dt.timedelta(hours=1)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "hour":
            return queryset.filter(expires_at__gt=now, expires_at__lte=hour)
        if self.value() == "later":
            return queryset.filter(expires_at__gt=hour)
        return queryset


class WarmForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL: one request per line (a job, an OpenAI batch line or a bare request body)"
    )
    user = forms.CharField(help_text="the username that owns the jobs and their cached answers")
    priority = forms.IntegerField(min_value=0, max_value=9, initial=WARM_PRIORITY)


class CacheEntryAdmin(admin.ModelAdmin):
    list_display = [
        "short_key",
        "model",
        "kind",
        "scope",
        "hits",
        "size_bytes",
        "created_at",
        "last_hit_at",
        "expires_at",
        "is_live",
    ]
    list_filter = ["kind", ExpiryFilter, HitsFilter, "model"]
    search_fields = ["model", "key", "owner__username"]
    list_select_related = ["owner"]
    date_hierarchy = "expires_at"
    actions = ["purge_selected"]
    change_list_template = "admin/llmqueue/cacheentry/change_list.html"
    readonly_fields = [
        "key",
        "scope",
        "owner",
        "model",
        "kind",
        "response",
        "size_bytes",
        "hits",
        "created_at",
        "last_hit_at",
        "used_at",
        "expires_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # entries come from answers; the warm-up page asks for them

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # purge_selected also clears the faster levels
        return actions

    @admin.display(description="key")
    def short_key(self, obj: CacheEntry) -> str:
        scope, _, digest = obj.key.partition("/")
        return f"{scope}/{digest[:12]}…"

    @admin.display(boolean=True, description="live")
    def is_live(self, obj: CacheEntry) -> bool:
        return obj.expires_at > timezone.now()

    @admin.action(description="Purge selected entries", permissions=["delete"])
    def purge_selected(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        n = cache_purge(keys=queryset.values_list("key", flat=True))
        self.message_user(request, f"Purged {n} cache entr{'y' if n == 1 else 'ies'}.")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {"can_purge": self.has_delete_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("purge-expired/", view(self.purge_expired), name="llmqueue_cacheentry_purge"),
            path("warm/", view(self.warm), name="llmqueue_cacheentry_warm"),
            *super().get_urls(),
        ]

    def purge_expired(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and self.has_delete_permission(request):
            n = cache_purge(expired=True)
            self.message_user(request, f"Purged {n} expired cache entr{'y' if n == 1 else 'ies'}.")
        return HttpResponseRedirect(reverse("admin:llmqueue_cacheentry_changelist"))

    def warm(self, request: HttpRequest) -> HttpResponse:
        """Upload a JSONL file of requests; then watch its jobs run (the page refreshes)."""
        if request.method == "POST":
            form = WarmForm(request.POST, request.FILES)
            if form.is_valid():
                batches = self._warm(request, form)
                if batches is not None:
                    url = reverse("admin:llmqueue_cacheentry_warm")
                    return HttpResponseRedirect(f"{url}?batches={','.join(map(str, batches))}")
        else:
            form = WarmForm(initial={"user": request.user.get_username()})
        ids = [int(b) for b in request.GET.get("batches", "").split(",") if b.isdigit()]
        status = warm_status(ids) if ids else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Warm the response cache",
            "form": form,
            "status": status,
            "running": status is not None and status["done"] < status["total"],
            "batches": ids,
        }
        return TemplateResponse(request, "admin/llmqueue/cacheentry/warm.html", context)

    def _warm(self, request: HttpRequest, form: WarmForm) -> list[int] | None:
        name = form.cleaned_data["user"]
        if name != request.user.get_username() and not request.user.is_superuser:
            form.add_error("user", "only a superuser may warm the cache for another user")
            return None
        owner = get_user_model().objects.filter(username=name).first()
        if owner is None:
            form.add_error("user", f"no user {name!r}")
            return None
        upload = form.cleaned_data["file"]
        try:
            specs = warm_specs(upload, priority=form.cleaned_data["priority"])
            report = cache_warm(owner=owner, specs=specs, name=f"cache warm-up: {upload.name}")
        except SubmitError as exc:
            form.add_error("file", f"{exc} (nothing was submitted)")
            return None
        self.message_user(
            request,
            f"Submitted {report.submitted} requests: {report.cached} cached already, "
            f"{report.following} following an identical job, {report.queued} queued.",
            messages.SUCCESS,
        )
        return report.batches


admin.site.register(CacheEntry, CacheEntryAdmin)
