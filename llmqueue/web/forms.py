from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator

from llmqueue.conf import conf
from llmqueue.jobs import JobSpec, served_models
from llmqueue.models import Kind
from llmqueue.validation import payload_problems


class JobForm(forms.Form):
    kind = forms.ChoiceField(choices=Kind.choices, initial=Kind.CHAT)
    model = forms.ChoiceField(choices=[], help_text="models that an enabled endpoint serves")
    system = forms.CharField(
        label="System prompt", required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    prompt = forms.CharField(
        label="Message",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="the user message (chat), the prompt (completion) or the text to embed",
    )
    parameters = forms.CharField(
        label="Other parameters (JSON object)",
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='e.g. {"temperature": 0.2, "max_tokens": 256}',
    )
    priority = forms.IntegerField(
        min_value=0, max_value=9, initial=5, help_text="0-9, higher runs first"
    )
    max_attempts = forms.IntegerField(min_value=1, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m, m) for m in served_models()]
        limit = conf.MAX_ATTEMPTS_LIMIT
        self.fields["max_attempts"].validators.append(MaxValueValidator(limit))
        self.fields["max_attempts"].widget.attrs["max"] = limit

    def clean_parameters(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("parameters") or "{}"
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        payload: dict[str, Any] = {**data["parameters"], "model": data["model"]}
        text = data.get("prompt", "")
        if data["kind"] == Kind.CHAT:
            messages = [{"role": "system", "content": data["system"]}] if data.get("system") else []
            payload["messages"] = (
                [*messages, {"role": "user", "content": text}] if text else messages
            )
            if not text:
                self.add_error("prompt", "a chat needs a message")
                return data
        elif data["kind"] == Kind.COMPLETION:
            payload["prompt"] = text
        else:
            payload["input"] = text
        for problem in payload_problems(data["kind"], payload):
            field, _, reason = problem.partition(": ")
            target = "prompt" if field.split("[")[0] in {"messages", "prompt", "input"} else None
            self.add_error(target, f"{field}: {reason}" if target is None else reason)
        data["payload"] = payload
        return data

    def to_spec(self) -> JobSpec:
        d = self.cleaned_data
        return JobSpec(
            kind=d["kind"],
            payload=d["payload"],
            priority=d["priority"],
            max_attempts=d.get("max_attempts"),
        )
