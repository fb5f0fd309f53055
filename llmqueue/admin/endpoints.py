"""The admin of endpoints: their settings, health and breakers (staff only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils.html import format_html

from llmqueue.endpoints.health import endpoints_check
from llmqueue.endpoints.pools import breaker_reset
from llmqueue.models import Endpoint, Job, Status


class EndpointForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Sent as 'Authorization: Bearer'. Never shown again: "
        "leave blank to keep the current key.",
    )
    base_url = forms.URLField(
        max_length=500, assume_scheme="http", help_text="e.g. http://host:8000/v1"
    )
    clear_api_key = forms.BooleanField(required=False, help_text="remove the stored key")
    served_models = forms.CharField(
        label="Models",
        help_text="model names this endpoint serves, comma separated",
        widget=forms.TextInput(attrs={"size": 60}),
    )

    class Meta:
        model = Endpoint
        fields = [
            "name",
            "base_url",
            "api_key",
            "clear_api_key",
            "served_models",
            "weight",
            "max_concurrency",
            "rpm_limit",
            "tpm_limit",
            "timeout_s",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["api_key"] = ""
        if self.instance.pk:
            self.initial["served_models"] = ", ".join(self.instance.served_models or [])

    def clean_served_models(self) -> list[str]:
        names = [n.strip() for n in self.cleaned_data["served_models"].split(",") if n.strip()]
        if not names:
            raise forms.ValidationError("name at least one model")
        return names

    def clean_base_url(self) -> str:
        return self.cleaned_data["base_url"].rstrip("/")

    def clean_timeout_s(self) -> float:
        value = self.cleaned_data["timeout_s"]
        if not 0.1 <= value <= 3600:
            raise forms.ValidationError("must be between 0.1 and 3600 seconds")
        return value

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        new_key = self.cleaned_data.get("api_key")
        if self.cleaned_data.get("clear_api_key"):
            endpoint.api_key = ""
        elif not new_key and self.instance.pk:
            endpoint.api_key = (
                Endpoint.objects.filter(pk=self.instance.pk).values_list("api_key", flat=True).get()
            )
        if commit:
            endpoint.save()
        return endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = [
        "name",
        "base_url",
        "models_list",
        "weight",
        "max_concurrency",
        "enabled",
        "health_badge",
        "breaker_badge",
        "latency",
        "in_flight",
        "has_key",
    ]
    list_filter = ["enabled", "healthy", "breaker_state"]
    search_fields = ["name", "base_url"]
    actions = ["enable", "disable", "reset_breaker", "check_health"]
    readonly_fields = ["healthy", "last_check_at", "last_error", "breaker_state", "breaker"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        running = (
            Job.objects.filter(
                endpoint=OuterRef("pk"), status=Status.RUNNING, lease_expires_at__gt=Now()
            )
            .order_by()
            .values("endpoint")
            .annotate(n=Count("id"))
            .values("n")
        )
        return super().get_queryset(request).annotate(running=Subquery(running))

    @admin.display(description="models")
    def models_list(self, obj: Endpoint) -> str:
        return ", ".join(obj.served_models or [])

    @admin.display(boolean=True, description="API key")
    def has_key(self, obj: Endpoint) -> bool:
        return bool(obj.api_key)

    @admin.display(description="health", ordering="healthy")
    def health_badge(self, obj: Endpoint) -> str:
        if not obj.enabled:
            return _badge("disabled", "#57606a")
        if obj.healthy:
            return _badge("healthy", "#116329")
        return _badge("unhealthy", "#a40e26", title=obj.last_error)

    @admin.display(description="breaker", ordering="breaker_state")
    def breaker_badge(self, obj: Endpoint) -> str:
        colors = {"closed": "#116329", "half_open": "#7d4e00", "open": "#a40e26"}
        return _badge(obj.breaker_state, colors.get(obj.breaker_state, "#57606a"))

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: Endpoint) -> str:
        return "-" if obj.latency_ms is None else f"{obj.latency_ms:.0f} ms"

    @admin.display(description="in flight")
    def in_flight(self, obj: Endpoint) -> str:
        return f"{getattr(obj, 'running', None) or 0} / {obj.max_concurrency}"

    @admin.action(description="Enable selected endpoints")
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self.message_user(request, f"Enabled {queryset.update(enabled=True)} endpoint(s).")

    @admin.action(description="Disable selected endpoints")
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self.message_user(request, f"Disabled {queryset.update(enabled=False)} endpoint(s).")

    @admin.action(description="Reset the breaker (close it now)")
    def reset_breaker(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        n = breaker_reset(endpoint_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Closed the breaker of {n} endpoint(s).")

    @admin.action(description="Check health now")
    def check_health(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        result = endpoints_check(endpoint_ids=list(queryset.values_list("pk", flat=True)))
        summary = ", ".join(f"{n}: {'healthy' if ok else 'unhealthy'}" for n, ok in result.items())
        self.message_user(request, f"Checked {summary}.")


def _badge(text: str, color: str, *, title: str = "") -> str:
    return format_html(
        '<span title="{}" style="color:#fff;background:{};padding:1px 6px;'
        'border-radius:8px">{}</span>',
        title,
        color,
        text,
    )
