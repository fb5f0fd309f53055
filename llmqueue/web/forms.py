"""Forms of the pages: submit a job, filter my jobs, upload a JSONL batch."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.utils import timezone

from llmqueue.conf import conf
from llmqueue.jobs import JobSpec, served_models
from llmqueue.jobs.intake import PAYLOAD, job_spec_check
from llmqueue.jobs.jsonl import JsonlFile
from llmqueue.jobs.validation import (
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    deadline_of,
    spec_problems,
)
from llmqueue.models import Kind, Status
from llmqueue.web.batch_upload import batch_file_parse

#: the roles the turn editor offers (the system prompt has its own field)
TURN_ROLES = [("user", "user"), ("assistant", "assistant")]
#: the payload paths a form shows on its message field: what the user typed there
_PROMPT_PATHS = {"messages", "prompt", "input", PAYLOAD}


# The bounds are the intake's rules (``llmqueue.jobs.validation``), which the forms ask in
# clean(); the inputs only show them to the browser.
def _priority_input() -> forms.NumberInput:
    return forms.NumberInput(attrs={"min": PRIORITY_MIN, "max": PRIORITY_MAX})


def _attempts_input(field: forms.Field) -> None:
    field.widget.attrs.update(min=1, max=conf.MAX_ATTEMPTS_LIMIT)


def _deadline_fields() -> tuple[forms.DateTimeField, forms.IntegerField]:
    """A job's optional deadline, as a time or as seconds from now (the intake checks both)."""
    return (
        forms.DateTimeField(
            required=False,
            widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
            help_text="optional, UTC: still queued then, the job expires without a call",
        ),
        forms.IntegerField(
            label="Expires in (seconds)",
            required=False,
            help_text="optional, instead of a deadline",
        ),
    )


def _add_spec_problems(form: forms.Form, problems: dict[str, list[str]]) -> None:
    """The intake's problems on the form's own fields (those it has), the rest on the form."""
    for field, reasons in problems.items():
        if field == PAYLOAD:
            continue  # the caller knows which of its fields built the payload
        if field in form.fields:
            form.add_error(field, reasons)
        else:
            form.add_error(None, [f"{field}: {reason}" for reason in reasons])


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
        initial=PRIORITY_DEFAULT, help_text="0-9, higher runs first", widget=_priority_input()
    )
    max_attempts = forms.IntegerField(required=False)
    deadline, expires_in = _deadline_fields()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec: JobSpec | None = None
        cast(forms.ChoiceField, self.fields["model"]).choices = [(m, m) for m in served_models()]
        _attempts_input(self.fields["max_attempts"])
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
        self.spec, problems = job_spec_check(
            kind=data["kind"],
            payload=payload,
            priority=data["priority"],
            max_attempts=data.get("max_attempts"),
            deadline=data.get("deadline"),
            expires_in=data.get("expires_in"),
        )
        _add_spec_problems(self, problems)
        for problem in problems.get(PAYLOAD, []):
            field, _, reason = problem.partition(": ")
            if field == PAYLOAD:  # over the size limit: most of a request is its message
                reason = f"the request {reason}; shorten the message or the parameters"
            target = "prompt" if field.split("[")[0] in _PROMPT_PATHS else None
            self.add_error(target, f"{field}: {reason}" if target is None else reason)
        return data

    def to_spec(self) -> JobSpec:
        assert self.spec is not None, "to_spec() after is_valid()"
        return self.spec


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
    priority = forms.IntegerField(
        initial=PRIORITY_DEFAULT, help_text="for every job", widget=_priority_input()
    )
    max_attempts = forms.IntegerField(required=False)
    deadline, expires_in = _deadline_fields()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _attempts_input(self.fields["max_attempts"])
        self.fields["file"].widget.attrs["accept"] = ".jsonl,.json,.txt,application/jsonl"
        self.parsed: JsonlFile | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        common = {"priority": data["priority"], "max_attempts": data.get("max_attempts")}
        _add_spec_problems(self, spec_problems(kind=Kind.CHAT, **common))
        # One deadline for the whole file (a line may name its own).
        deadline, late = deadline_of(
            deadline=data.get("deadline"), expires_in=data.get("expires_in"), now=timezone.now()
        )
        _add_spec_problems(self, late)
        if self.errors:  # one bad setting would otherwise be named on every line
            return data
        self.parsed = batch_file_parse(data["file"], **common, deadline=deadline)
        if self.parsed.errors:
            self.add_error("file", self.parsed.summary())
        return data
