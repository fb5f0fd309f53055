"""The endpoints llmqueue calls, with their health, breaker and balancer state."""

from __future__ import annotations

from django.db import models

from llmqueue.db.fields import EncryptedTextField


class Endpoint(models.Model):
    """An OpenAI-compatible upstream (vLLM, TGI, llama.cpp, Ollama, LiteLLM, OpenAI...)."""

    name = models.SlugField(max_length=100, unique=True)
    base_url = models.URLField(max_length=500, help_text="e.g. http://host:8000/v1")
    #: encrypted at rest (LLMQUEUE_FIELD_KEYS); reads give the plain key, which must never
    #: reach a response, a page or a log line
    api_key = EncryptedTextField(blank=True, default="")
    served_models = models.JSONField(
        default=list, verbose_name="models", help_text="model names this endpoint serves"
    )
    weight = models.PositiveIntegerField(default=1)
    max_concurrency = models.PositiveIntegerField(default=64)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    timeout_s = models.FloatField(default=120.0)
    enabled = models.BooleanField(default=True)
    # --- health (llmqueue.endpoints.health): active checks of GET {base_url}/models ---
    healthy = models.BooleanField(default=True)
    health_failures = models.PositiveIntegerField(default=0, help_text="consecutive failed checks")
    health_successes = models.PositiveIntegerField(default=0, help_text="consecutive good checks")
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    #: epoch seconds: no calls before this (it answered 429 with Retry-After, or reported its
    #: rate limit exhausted)
    paused_until = models.FloatField(default=0.0)
    # --- circuit breaker (llmqueue.policies.breaker): the state, and its version for CAS ---
    breaker_state = models.CharField(max_length=10, default="closed")
    breaker = models.JSONField(default=dict, blank=True)
    breaker_version = models.PositiveBigIntegerField(default=0)
    # --- what the balancer reads (llmqueue.policies.balancer): peak-EWMA latency, fading
    # failure share ---
    latency_ms = models.FloatField(null=True, blank=True)
    latency_at = models.FloatField(null=True, blank=True, help_text="epoch seconds")
    recent_failures = models.FloatField(default=0.0)
    recent_calls = models.FloatField(default=0.0)
    recent_at = models.FloatField(default=0.0, help_text="epoch seconds")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
