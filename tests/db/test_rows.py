"""Many rows, one statement: values stored as the ORM stores them, upserts, fences."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from llmqueue.db.rows import (
    InstancesInsert,
    db_param,
    instances_read,
    rows_insert,
    rows_read,
    rows_update,
)
from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Batch, CacheEntry, Job, Status
from tests.factories import chat_spec, make_endpoint, make_user

pytestmark = pytest.mark.django_db

ENTRY = ("key", "scope", "owner", "model", "kind", "response", "size_bytes", "hits")
ENTRY += ("last_hit_at", "created_at", "used_at", "expires_at")


def entry(key: str, response: object, at: dt.datetime, hits: int = 0) -> tuple[object, ...]:
    return (key, "shared", None, "m", "chat", response, 10, hits, None, at, at, at)


def test_insert_stores_json_and_datetimes_as_the_orm_does():
    at = timezone.now()
    rows_insert(CacheEntry, ENTRY, [entry("k1", {"a": [1, "x"]}, at), entry("k2", "text", at)])
    one, two = CacheEntry.objects.order_by("key")
    assert one.response == {"a": [1, "x"]} and two.response == "text"  # a JSON string stays one
    assert one.created_at == at and two.expires_at == at


def test_upsert_updates_only_the_named_columns():
    at = timezone.now()
    rows_insert(CacheEntry, ENTRY, [entry("k", {"v": 1}, at, hits=7)])
    later = at + dt.timedelta(seconds=5)
    rows_insert(
        CacheEntry,
        ENTRY,
        [entry("k", {"v": 2}, later)],
        conflict=["key"],
        update=["response", "created_at"],
    )
    row = CacheEntry.objects.get()
    assert row.response == {"v": 2} and row.created_at == later
    assert row.hits == 7 and row.used_at == at  # not named: kept


def test_update_changes_only_rows_whose_fence_holds():
    make_endpoint()
    _, (held, other) = jobs_submit_many(owner=make_user(), specs=[chat_spec(), chat_spec()])
    Job.objects.filter(pk__in=[held.pk, other.pk]).update(status=Status.RUNNING, lease_token="t")
    changed = rows_update(
        Job,
        assign=("status", "error"),
        where=("id", "lease_token"),
        rows=[
            (Status.SUCCEEDED.value, "", held.pk, "t"),
            (Status.SUCCEEDED.value, "", other.pk, "x"),
        ],
    )
    assert Job.objects.get(pk=held.pk).status == Status.SUCCEEDED
    assert Job.objects.get(pk=other.pk).status == Status.RUNNING
    assert changed == 1  # all statements together: what the drain's fence check counts on


def test_instances_insert_saves_every_field_and_reads_the_late_ones_when_it_runs():
    owner = make_user()
    batch = Batch.objects.create(owner=owner)
    now = timezone.now()
    job = Job(owner=owner, batch=batch, model="m", payload={"model": "m"}, created_at=now)
    job.available_at = now
    insert = InstancesInsert([job], late=["status", "fair_seq"])
    job.payload = {"model": "changed"}  # not late: prepared already
    job.status, job.fair_seq = Status.SUCCEEDED, 7
    insert.run([job])
    saved = Job.objects.get(batch=batch)
    assert saved.payload == {"model": "m"}
    assert saved.status == Status.SUCCEEDED and saved.fair_seq == 7
    assert saved.created_at == now and saved.max_attempts == job.max_attempts


def test_read_converts_values_as_the_orm_does():
    at = timezone.now()
    rows_insert(CacheEntry, ENTRY, [entry("k", {"a": [1]}, at, hits=3)])
    sql = "SELECT {columns} FROM {table} WHERE key = %s AND expires_at >= %s"
    fields = ("key", "response", "hits", "expires_at")
    (row,) = rows_read(CacheEntry, fields, sql, ["k", db_param(CacheEntry, "expires_at", at)])
    assert row == ["k", {"a": [1]}, 3, at]  # JSON decoded, the datetime aware
    later = db_param(CacheEntry, "expires_at", at + dt.timedelta(microseconds=1))
    assert rows_read(CacheEntry, ("key",), sql, ["k", later]) == []


def test_instances_read_builds_what_a_queryset_builds():
    make_endpoint()
    _, (job,) = jobs_submit_many(owner=make_user(), specs=[chat_spec()])
    (read,) = instances_read(Job, "SELECT {columns} FROM {table} WHERE id = %s", [job.pk])
    expected = Job.objects.get(pk=job.pk)
    fields = [f.attname for f in Job._meta.concrete_fields]
    assert [getattr(read, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert not read._state.adding
