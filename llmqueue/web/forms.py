"""Forms of the pages: submit a job, filter my jobs, upload a JSONL batch."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.core.validators import MaxValueValidator

from llmqueue.conf import conf
from llmqueue.jobs import JobSpec, served_models
from llmqueue.jobs.validation import payload_problems
from llmqueue.models import Kind, Status
from llmqueue.web.batch_upload import BatchFile, batch_file_parse

#: the roles the turn editor offers (the system prompt has its own field)
TURN_ROLES = [("user", "user"), ("assistant", "assistant")]


class JobForm(forms.Form):
    """One job. A chat is the system prompt, any earlier turns, then the message.

    Earlier turns come as parallel ``turn_role`` / ``turn_content`` lists (the page's turn
    editor adds rows); rows with no content are ignored.
    """

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
    temperature = forms.FloatField(
        required=False, min_value=0, max_value=2, widget=forms.NumberInput(attrs={"step": "0.1"})
    )
    max_tokens = forms.IntegerField(label="Max tokens", required=False, min_value=1)
    parameters = forms.CharField(
        label="Other parameters (JSON object)",
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='e.g. {"top_p": 0.9, "stop": ["\\n\\n"]}',
    )
    priority = forms.IntegerField(
        min_value=0, max_value=9, initial=5, help_text="0-9, higher runs first"
    )
    max_attempts = forms.IntegerField(min_value=1, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["model"]).choices = [(m, m) for m in served_models()]
        limit = conf.MAX_ATTEMPTS_LIMIT
        self.fields["max_attempts"].validators.append(MaxValueValidator(limit))
        self.fields["max_attempts"].widget.attrs["max"] = limit
        self.turns = self._turns()
        self.turn_errors: list[str] = []

    def _turns(self) -> list[dict[str, str]]:
        if not self.is_bound:
            return []
        roles = self.data.getlist("turn_role") if hasattr(self.data, "getlist") else []
        contents = self.data.getlist("turn_content") if hasattr(self.data, "getlist") else []
        return [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]

    def clean_parameters(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("parameters") or "{}"
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value

    def _messages(self, data: dict[str, Any], text: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": data["system"]}] if data.get("system") else []
        allowed = {r for r, _ in TURN_ROLES}
        for n, turn in enumerate(self.turns, start=1):
            if not turn["content"].strip():
                continue
            if turn["role"] not in allowed:
                self.turn_errors.append(f"turn {n}: role must be user or assistant")
                continue
            messages.append(turn)
        if text:
            messages.append({"role": "user", "content": text})
        return messages

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        payload: dict[str, Any] = {**data["parameters"], "model": data["model"]}
        for name in ("temperature", "max_tokens"):
            if data.get(name) is not None:
                payload[name] = data[name]
        text = data.get("prompt", "")
        if data["kind"] == Kind.CHAT:
            payload["messages"] = self._messages(data, text)
            if self.turn_errors:
                self.add_error(None, self.turn_errors)
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


class JobFilterForm(forms.Form):
    """The filters of "My jobs" (a GET form: every field optional, bad values ignored)."""

    q = forms.CharField(label="Search", required=False, help_text="id, text, model or custom id")
    status = forms.ChoiceField(required=False, choices=[("", "any"), *Status.choices])
    model = forms.ChoiceField(required=False, choices=[])
    priority = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "any"), *[(p, str(p)) for p in range(9, -1, -1)]],
    )
    batch = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        models = served_models()
        chosen = self.data.get("model") if self.is_bound else None
        if chosen and chosen not in models:
            models.append(chosen)  # a model no endpoint serves any more, from an old job
        cast(forms.ChoiceField, self.fields["model"]).choices = [
            ("", "any"),
            *[(m, m) for m in models],
        ]

    def filters(self) -> dict[str, Any]:
        """The valid filters, by the names ``selectors.jobs_filtered`` takes; bad ones dropped."""
        self.is_valid()
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}


class BatchUploadForm(forms.Form):
    file = forms.FileField(
        label="JSONL file",
        help_text="one request per line: an OpenAI request body, or an OpenAI Batch API line "
        '({"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}})',
    )
    name = forms.CharField(max_length=200, required=False, help_text="optional")
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="for every job")
    max_attempts = forms.IntegerField(min_value=1, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = conf.MAX_ATTEMPTS_LIMIT
        self.fields["max_attempts"].validators.append(MaxValueValidator(limit))
        self.fields["max_attempts"].widget.attrs["max"] = limit
        self.fields["file"].widget.attrs["accept"] = ".jsonl,.json,.txt,application/jsonl"
        self.parsed: BatchFile | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        self.parsed = batch_file_parse(
            data["file"], priority=data["priority"], max_attempts=data.get("max_attempts")
        )
        if self.parsed.problems:
            self.add_error("file", self.parsed.summary())
        return data
