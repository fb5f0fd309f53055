"""The admin of endpoints: their settings, health and breakers (staff only)."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils.html import format_html

from llmqueue.endpoints.health import endpoints_check
from llmqueue.endpoints.pools import breaker_reset
from llmqueue.endpoints.service import endpoint_create, endpoint_problems, endpoint_update
from llmqueue.models import Endpoint, Job, Status


class EndpointForm(forms.ModelForm):
    """Parses the page's fields into values; the rules and their words are the endpoint
    service's (``llmqueue.endpoints.service``), shared with the API. The fields only parse
    (a number is a number): every bound is the service's."""

    name = forms.CharField(help_text="letters, numbers, underscores or hyphens")
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Sent as 'Authorization: Bearer'. Never shown again: "
        "leave blank to keep the current key.",
    )
    base_url = forms.CharField(help_text="e.g. http://host:8000/v1")
    clear_api_key = forms.BooleanField(required=False, help_text="remove the stored key")
    served_models = forms.CharField(
        label="Models",
        required=False,
        help_text="model names this endpoint serves, comma separated",
        widget=forms.TextInput(attrs={"size": 60}),
    )
    weight = forms.IntegerField(initial=1, help_text="1-1000")
    max_concurrency = forms.IntegerField(initial=64, help_text="1-10000")
    rpm_limit = forms.IntegerField(required=False)
    tpm_limit = forms.IntegerField(required=False)
    timeout_s = forms.FloatField(initial=120.0, help_text="0.1-3600 seconds")

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

    def values(self) -> dict[str, Any]:
        """The settings as the service names them; a blank key keeps the stored one."""
        data = self.cleaned_data
        values = {f: data[f] for f in SETTINGS if f in data}
        values["models"] = (data.get("served_models") or "").split(",")
        if data.get("clear_api_key"):
            values["api_key"] = ""
        elif data.get("api_key"):
            values["api_key"] = data["api_key"]
        return values

    def clean(self) -> dict[str, Any]:
        super().clean()
        problems = endpoint_problems(
            values=self.values(), endpoint_id=self.instance.pk, partial=self.instance.pk is not None
        )
        for field, reasons in problems.items():
            target = _FORM_FIELDS.get(field, field)
            if target in self.fields and target not in self.errors:
                self.add_error(target, reasons)
        return self.cleaned_data

    def endpoint_save(self) -> Endpoint:
        """Write through the service (it validates again, as it does for any caller)."""
        values = self.values()
        if self.instance.pk:
            return endpoint_update(endpoint_id=self.instance.pk, changes=values)
        return endpoint_create(**values)


#: the service's names of the settings this form edits, and its field for each that differs
SETTINGS = (
    "name",
    "base_url",
    "weight",
    "max_concurrency",
    "rpm_limit",
    "tpm_limit",
    "timeout_s",
    "enabled",
)
_FORM_FIELDS = {"models": "served_models"}


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

    # Writes go through the endpoint service, as the API's do: the form's save_form returns
    # the endpoint the service wrote, and there is nothing left for save_model or relations.
    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Endpoint:
        return cast(EndpointForm, form).endpoint_save()

    def save_model(self, request: HttpRequest, obj: Endpoint, form: Any, change: bool) -> None:
        """Saved by ``save_form`` already."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """An endpoint has no relations edited here."""

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
