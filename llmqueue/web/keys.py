"""The API keys page: make a key (shown once), see when each was last used, revoke one."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from llmqueue.keys import apikey_create, apikey_revoke, apikeys_of


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what uses it, e.g. “laptop” or “eval job”")
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="empty: never. The key stops working at the start of that day (UTC).",
    )

    def clean_expires_on(self) -> dt.date | None:
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("must be a day after today")
        return day

    def expires_at(self) -> dt.datetime | None:
        day = self.cleaned_data.get("expires_on")
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) if day else None


@never_cache
@login_required
def key_list(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        # Answered here rather than redirected: the plain key must not pass through the
        # session or a message, and this page is the one place it is ever shown.
        new_key, _ = apikey_create(
            owner=request.user, name=form.cleaned_data["name"], expires_at=form.expires_at()
        )
        form = KeyForm()
    keys = apikeys_of(owner=request.user)
    return render(
        request,
        "llmqueue/key_list.html",
        {"form": form, "keys": keys, "new_key": new_key, "now": timezone.now()},
    )


@require_POST
@login_required
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    if apikey_revoke(owner=request.user, key_id=pk):
        messages.success(request, "Key revoked: it no longer works.")
    else:
        messages.error(request, "No such live key.")
    return redirect("key-list")
