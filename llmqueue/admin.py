"""The Django admin: endpoints, jobs, and dead letters with one-click retry. Thin over jobs.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from llmqueue.dispatch import breaker_reset
from llmqueue.errors import TransitionError
from llmqueue.health import endpoints_check
from llmqueue.jobs import job_retry, jobs_retry
from llmqueue.models import DeadLetter, Endpoint, Job, JobAttempt, Status


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


class AttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "endpoint_name",
        "started_at",
        "duration_ms",
        "http_status",
        "outcome",
        "error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobAdminBase(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "status",
        "kind",
        "model",
        "priority",
        "attempts",
        "endpoint",
        "created_at",
    ]
    list_filter = ["status", "priority", "kind", "endpoint"]
    search_fields = ["id", "model", "owner__username", "idempotency_key"]
    list_select_related = ["owner", "endpoint"]
    inlines = [AttemptInline]
    readonly_fields = [
        "owner",
        "batch",
        "kind",
        "model",
        "payload",
        "status",
        "attempts",
        "max_attempts",
        "priority",
        "available_at",
        "endpoint",
        "result",
        "error",
        "cache",
        "cache_hit",
        "idempotency_key",
        "created_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
    ]
    exclude = ["lease_token"]
    actions = ["retry_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API or the form, never hand-made

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the state machine (llmqueue.jobs) is the only writer

    @admin.action(description="Retry selected", permissions=["view"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        n = jobs_retry(job_ids=queryset.values_list("pk", flat=True))
        skipped = queryset.count() - n if n < queryset.count() else 0
        msg = f"Queued {n} job(s) again."
        if skipped:
            msg += f" {skipped} were not dead or cancelled and were left alone."
        self.message_user(request, msg, messages.SUCCESS if n else messages.WARNING)

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        return [
            path(
                "<int:pk>/retry/",
                self.admin_site.admin_view(self.retry_one),
                name=f"{opts.app_label}_{opts.model_name}_retry",
            ),
            *super().get_urls(),
        ]

    def retry_one(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(Job, pk=pk)
        if request.method == "POST":
            try:
                job_retry(job_id=job.pk)
            except TransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Job {job.pk} queued again.", messages.SUCCESS)
        # Its page among all jobs: once requeued it is no longer a dead letter.
        return HttpResponseRedirect(reverse("admin:llmqueue_job_change", args=[job.pk]))


@admin.register(Job)
class JobAdmin(JobAdminBase):
    pass


@admin.register(DeadLetter)
class DeadLetterAdmin(JobAdminBase):
    list_display = ["id", "owner", "model", "attempts", "short_error", "endpoint", "finished_at"]
    list_filter = ["priority", "kind", "endpoint"]
    change_form_template = "admin/llmqueue/deadletter/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).filter(status=Status.DEAD)

    @admin.display(description="error")
    def short_error(self, obj: Job) -> str:
        return obj.error[:120]
