"""The response cache through the state machine: hits at submission, scopes, parameters, TTLs,
single-flight, and the database level's writes and eviction (drains simulated by claim+record).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading

import pytest
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from llmqueue.cache import StoreItem, cache_evict, cache_purge, cache_store_many, local_clear
from llmqueue.cache import metrics as cache_metrics
from llmqueue.cache.levels import local_level
from llmqueue.cache.store import cache_confirm, cache_lookup_many
from llmqueue.jobs import (
    JobSpec,
    job_cancel,
    job_retry,
    job_submit,
    jobs_reap,
    jobs_record,
    jobs_submit_many,
)
from llmqueue.models import CacheEntry, Job, Outcome, Status
from llmqueue.standin.echo import echo_answer
from llmqueue.worker.scheduler import jobs_claim
from tests.factories import attempt, chat_payload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_l1():
    local_clear()
    yield
    local_clear()


def spec(text: str = "same", **kw) -> JobSpec:
    params = kw.pop("params", {})
    return JobSpec(kind="chat", payload=chat_payload(text, **params), **kw)


def run_due(outcome: Outcome = Outcome.SUCCESS, *, lease_s: float | None = None):
    """One drain step: claim every due job and record ``outcome`` for each; returns the claims."""
    with transaction.atomic():
        claims = jobs_claim(limit=1000, lease_s=lease_s)
    results = []
    for c in claims:
        ok = outcome == Outcome.SUCCESS
        results.append(
            attempt(
                c,
                started_at=timezone.now(),
                duration_ms=1.0,
                outcome=outcome,
                http_status=200 if ok else (400 if outcome == Outcome.REJECTED else 503),
                body=echo_answer(c.kind, c.payload) if ok else None,
                error="" if ok else "HTTP 400: no",
            )
        )
    with transaction.atomic():
        jobs_record(results)
    return claims


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


# --- 1. the same request twice: one call, then a hit ----------------------------------------------


def test_same_request_twice_is_one_call_then_a_hit_with_the_same_result(api, echo_endpoint):
    body = {"payload": chat_payload("same")}
    first = api.post("/api/jobs/", body, format="json").json()
    assert first["status"] == "queued" and first["cache_hit"] is False
    assert len(run_due()) == 1
    r = api.post("/api/jobs/", body, format="json")
    assert r.status_code == 201
    second = r.json()
    assert second["status"] == "succeeded" and second["cache_hit"] is True
    assert second["result"] == Job.objects.get(pk=first["id"]).result
    assert second["endpoint"] is None and second["attempts"] == 0
    assert run_due() == []  # nothing left to call
    assert CacheEntry.objects.get().hits == 1


def test_json_formatting_and_key_order_still_hit(api, echo_endpoint):
    payload = {"model": "echo", "temperature": 0.5, "messages": [{"role": "user", "content": "x"}]}
    compact = json.dumps({"payload": payload}, separators=(",", ":"))
    spaced = json.dumps({"payload": dict(reversed(list(payload.items())))}, indent=3)
    api.post("/api/jobs/", compact, content_type="application/json")
    run_due()
    assert api.post("/api/jobs/", spaced, content_type="application/json").json()["cache_hit"]


def test_another_user_gets_a_call_of_their_own_unless_the_model_is_shared(
    user, other_user, echo_endpoint, settings
):
    job_submit(owner=user, spec=spec("private"))
    run_due()
    theirs, _ = job_submit(owner=other_user, spec=spec("private"))
    assert theirs.status == Status.QUEUED and not theirs.cache_hit and theirs.follows_id is None
    assert len(run_due()) == 1  # a second upstream call
    assert set(CacheEntry.objects.values_list("scope", flat=True)) == {
        f"user:{user.pk}",
        f"user:{other_user.pk}",
    }

    settings.LLMQUEUE = {"CACHE_SHARED_MODELS": ["echo"]}
    job_submit(owner=user, spec=spec("public"))
    assert len(run_due()) == 1
    theirs, _ = job_submit(owner=other_user, spec=spec("public"))
    assert theirs.status == Status.SUCCEEDED and theirs.cache_hit  # no call at all
    shared = CacheEntry.objects.get(scope="shared")
    assert shared.owner_id is None and shared.key.startswith("shared/")


def test_a_shared_twin_in_flight_is_followed_across_users(
    user, other_user, echo_endpoint, settings
):
    settings.LLMQUEUE = {"CACHE_SHARED_MODELS": "*"}
    leader, _ = job_submit(owner=user, spec=spec("public"))
    theirs, _ = job_submit(owner=other_user, spec=spec("public"))
    assert theirs.follows_id == leader.pk
    assert len(run_due()) == 1
    assert fresh(theirs).status == Status.SUCCEEDED and theirs.cache_hit


# --- 2. any change to the request misses ----------------------------------------------------------

BASE = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.9},
        {"max_tokens": 65},
        {"tools": [{"type": "function", "function": {"name": "g", "parameters": {}}}]},
        {"messages": list(reversed(BASE["messages"]))},
        {"messages": [BASE["messages"][0], {"role": "user", "content": "Hi "}]},
    ],
    ids=["temperature", "max_tokens", "tool-definition", "message-order", "space-in-text"],
)
def test_a_changed_parameter_misses(user, echo_endpoint, change):
    base = JobSpec(kind="chat", payload={"model": "echo", **BASE})
    job_submit(owner=user, spec=base)
    run_due()
    assert job_submit(owner=user, spec=base)[0].cache_hit  # the unchanged request hits
    changed, _ = job_submit(
        owner=user, spec=JobSpec(kind="chat", payload={"model": "echo", **BASE, **change})
    )
    assert changed.status == Status.QUEUED and not changed.cache_hit
    assert changed.follows_id is None
    assert len(run_due()) == 1


# --- cache: false, cache_ttl, expiry --------------------------------------------------------------


def test_cache_false_neither_reads_nor_writes(user, echo_endpoint):
    job_submit(owner=user, spec=spec(cache=False))
    run_due()
    assert not CacheEntry.objects.exists()
    job_submit(owner=user, spec=spec())
    run_due()
    assert CacheEntry.objects.count() == 1
    bypass, _ = job_submit(owner=user, spec=spec(cache=False))
    assert bypass.status == Status.QUEUED and bypass.cache_key is None
    # and it does not follow a cacheable twin in flight either
    leader, _ = job_submit(owner=user, spec=spec("in flight"))
    alone, _ = job_submit(owner=user, spec=spec("in flight", cache=False))
    assert alone.follows_id is None and leader.follows_id is None


def test_the_global_switch_turns_the_cache_off(user, echo_endpoint, settings):
    settings.LLMQUEUE = {"CACHE_ENABLED": False}
    job_submit(owner=user, spec=spec())
    run_due()
    again, _ = job_submit(owner=user, spec=spec())
    assert again.status == Status.QUEUED and not CacheEntry.objects.exists()


def test_cache_ttl_takes_only_younger_answers_and_shortens_the_stored_life(user, echo_endpoint):
    job_submit(owner=user, spec=spec(cache_ttl=600))
    run_due()
    entry = CacheEntry.objects.get()
    assert entry.expires_at - entry.created_at == dt.timedelta(seconds=600)
    CacheEntry.objects.update(created_at=F("created_at") - dt.timedelta(seconds=100))
    too_old, _ = job_submit(owner=user, spec=spec(cache_ttl=50))
    assert too_old.status == Status.QUEUED and not too_old.cache_hit
    young_enough, _ = job_submit(owner=user, spec=spec(cache_ttl=200))
    assert young_enough.cache_hit
    any_age, _ = job_submit(owner=user, spec=spec())
    assert any_age.cache_hit


@pytest.mark.parametrize(
    ("value", "reason"), [(0, "greater than or equal to 1"), (86401, "at most 86400"), ("x", "")]
)
def test_cache_ttl_is_validated(api, echo_endpoint, value, reason):
    r = api.post("/api/jobs/", {"payload": chat_payload(), "cache_ttl": value}, format="json")
    assert r.status_code == 400 and reason in r.json()["cache_ttl"][0]
    ok = api.post("/api/jobs/", {"payload": chat_payload(), "cache_ttl": 60}, format="json")
    assert ok.status_code == 201
    bulk = api.post(
        "/api/jobs/bulk/",
        {"jobs": [{"payload": chat_payload(), "cache_ttl": value}]},
        format="json",
    )
    assert bulk.status_code == 400


def test_an_expired_entry_misses_even_where_a_copy_is_held(
    user, echo_endpoint, django_capture_on_commit_callbacks
):
    job_submit(owner=user, spec=spec())
    run_due()
    with django_capture_on_commit_callbacks(execute=True):
        assert job_submit(owner=user, spec=spec())[0].cache_hit  # copied into L1 on commit
    key = CacheEntry.objects.get().key
    assert local_level().get(key) is not None
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    job, _ = job_submit(owner=user, spec=spec())
    assert job.status == Status.QUEUED and not job.cache_hit
    assert local_level().get(key) is None  # the stale copy was dropped


def test_an_entry_deleted_elsewhere_is_not_served_from_a_copy(
    user, echo_endpoint, django_capture_on_commit_callbacks
):
    job_submit(owner=user, spec=spec())
    run_due()
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=spec())
    CacheEntry.objects.all().delete()  # as another process's purge: this L1 still has a copy
    assert not job_submit(owner=user, spec=spec())[0].cache_hit


def test_a_replaced_entry_serves_the_new_answer_not_a_copy_of_the_old(
    user, echo_endpoint, django_capture_on_commit_callbacks
):
    job_submit(owner=user, spec=spec())
    run_due()
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=spec())  # L1 holds the first answer now
    key = CacheEntry.objects.get().key
    cache_store_many(
        [StoreItem(key=key, kind="chat", model="echo", response={"v": 2})],
        now=timezone.now() + dt.timedelta(seconds=1),
    )
    assert job_submit(owner=user, spec=spec())[0].result == {"v": 2}


# --- 3. single-flight -----------------------------------------------------------------------------


def test_twins_follow_the_leader_and_finish_with_its_answer(user, other_user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec("twin"))
    f1, _ = job_submit(owner=user, spec=spec("twin"))
    f2, _ = job_submit(owner=user, spec=spec("twin"))
    stranger, _ = job_submit(owner=other_user, spec=spec("twin"))  # another scope: not a twin
    assert f1.follows_id == f2.follows_id == leader.pk and stranger.follows_id is None
    claims = run_due()
    assert sorted(c.job_id for c in claims) == [leader.pk, stranger.pk]  # followers: never claimed
    leader = fresh(leader)
    for f in (fresh(f1), fresh(f2)):
        assert f.status == Status.SUCCEEDED and f.cache_hit and f.result == leader.result
        assert f.attempts == 0 and f.finished_at is not None
    assert not leader.cache_hit


def test_a_twin_submitted_while_the_leader_runs_follows_it(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec("slow"))
    with transaction.atomic():
        (claim,) = jobs_claim(limit=10)
    follower, _ = job_submit(owner=user, spec=spec("slow"))
    assert follower.follows_id == leader.pk
    with transaction.atomic():
        assert jobs_claim(limit=10) == []
    body = echo_answer("chat", claim.payload)
    with transaction.atomic():
        jobs_record(
            [
                attempt(
                    claim,
                    started_at=timezone.now(),
                    duration_ms=1.0,
                    outcome=Outcome.SUCCESS,
                    http_status=200,
                    body=body,
                )
            ]
        )
    assert fresh(follower).status == Status.SUCCEEDED and follower.result == body


def test_a_leader_finishing_between_lookup_and_insert_is_still_a_hit(
    user, echo_endpoint, monkeypatch
):
    leader, _ = job_submit(owner=user, spec=spec())
    # The lookup (before the transaction) saw nothing; the leader then finished.
    monkeypatch.setattr("llmqueue.jobs.intake.cache_lookup_many", lambda wanted, now: {})
    run_due()
    late, _ = job_submit(owner=user, spec=spec())
    assert late.cache_hit and late.result == fresh(leader).result
    _, bulk = jobs_submit_many(owner=user, specs=[spec(), spec()])
    assert all(j.cache_hit for j in bulk)


def test_bulk_twins_follow_one_leader(api, user, echo_endpoint):
    r = api.post(
        "/api/jobs/bulk/",
        {"jobs": [{"payload": chat_payload("b")}] * 5 + [{"payload": chat_payload("c")}]},
        format="json",
    )
    ids = [j["id"] for j in r.json()["jobs"]]
    jobs = [Job.objects.get(pk=i) for i in ids]
    assert [j.follows_id for j in jobs] == [None] + [ids[0]] * 4 + [None]
    _, more = jobs_submit_many(owner=user, specs=[spec("b")])
    assert more[0].follows_id == ids[0]  # a later batch follows the leader in flight
    assert len(run_due()) == 2
    assert Job.objects.filter(status=Status.SUCCEEDED).count() == 7
    assert Job.objects.filter(cache_hit=True).count() == 5
    _, later = jobs_submit_many(owner=user, specs=[spec("b"), spec("b"), spec("new")])
    assert [j.status for j in later] == [Status.SUCCEEDED, Status.SUCCEEDED, Status.QUEUED]
    assert CacheEntry.objects.get(key=later[0].cache_key).hits == 2  # one per job served
    assert later[0].result == fresh(jobs[0]).result


def test_a_dead_leader_releases_its_followers_to_run_on_their_own(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec())
    followers = [job_submit(owner=user, spec=spec())[0] for _ in range(2)]
    assert len(run_due(Outcome.REJECTED)) == 1
    assert fresh(leader).status == Status.DEAD
    for f in followers:
        assert fresh(f).status == Status.QUEUED and f.follows_id is None
    assert sorted(c.job_id for c in run_due()) == sorted(f.pk for f in followers)
    assert all(fresh(f).status == Status.SUCCEEDED and not f.cache_hit for f in followers)


def test_a_leader_retrying_later_keeps_its_followers(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec())
    follower, _ = job_submit(owner=user, spec=spec())
    run_due(Outcome.RETRY)
    assert fresh(leader).status == Status.QUEUED
    assert fresh(follower).follows_id == leader.pk


def test_cancelling_a_leader_releases_its_followers(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec())
    follower, _ = job_submit(owner=user, spec=spec())
    job_cancel(job_id=leader.pk)
    assert fresh(follower).follows_id is None and follower.status == Status.QUEUED
    assert [c.job_id for c in run_due()] == [follower.pk]


def test_a_cancelled_follower_stays_cancelled_and_runs_alone_when_retried(user, echo_endpoint):
    job_submit(owner=user, spec=spec())
    follower, _ = job_submit(owner=user, spec=spec())
    job_cancel(job_id=follower.pk)
    run_due()
    assert fresh(follower).status == Status.CANCELLED and follower.result is None
    job_retry(job_id=follower.pk)
    assert fresh(follower).follows_id is None and follower.status == Status.QUEUED


def test_a_leader_whose_last_worker_died_releases_its_followers(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec(max_attempts=1))
    follower, _ = job_submit(owner=user, spec=spec())
    with transaction.atomic():
        jobs_claim(limit=10, lease_s=-1)  # a lease that has already lapsed
    jobs_reap()
    assert fresh(leader).status == Status.DEAD
    assert fresh(follower).follows_id is None and follower.status == Status.QUEUED


def test_the_reaper_rescues_followers_a_leader_left_behind(user, echo_endpoint):
    a, _ = job_submit(owner=user, spec=spec("a"))
    fa, _ = job_submit(owner=user, spec=spec("a"))
    b, _ = job_submit(owner=user, spec=spec("b"))
    fb, _ = job_submit(owner=user, spec=spec("b"))
    # Leaders ending by a path that forgot their followers (written by hand on purpose).
    Job.objects.filter(pk=a.pk).update(status=Status.SUCCEEDED, result={"answer": 1})
    Job.objects.filter(pk=b.pk).update(status=Status.DEAD)
    jobs_reap()
    assert fresh(fa).status == Status.SUCCEEDED and fa.result == {"answer": 1} and fa.cache_hit
    assert fresh(fb).status == Status.QUEUED and fb.follows_id is None


def test_a_deleted_leader_frees_its_followers(user, echo_endpoint):
    leader, _ = job_submit(owner=user, spec=spec())
    follower, _ = job_submit(owner=user, spec=spec())
    Job.objects.filter(pk=leader.pk).delete()
    assert fresh(follower).follows_id is None
    assert [c.job_id for c in run_due()] == [follower.pk]


# --- 4. the database level: writes, expiry, LRU eviction (a fake clock) ---------------------------

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def store(i: int, *, at: dt.datetime, ttl: int | None = None, size: int = 1) -> str:
    key = f"shared/{i:064x}"
    cache_store_many(
        [StoreItem(key=key, kind="chat", model="m", response="x" * size, ttl_s=ttl)], now=at
    )
    return key


def hit(key: str, *, at: dt.datetime) -> None:
    assert cache_confirm({key: None}, cache_lookup_many({key: None}, now=at), now=at)


def test_entries_expire_at_their_ttl(settings):
    settings.LLMQUEUE = {"CACHE_TTL_S": 3600}
    key = store(1, at=T0)
    short = store(2, at=T0, ttl=10)
    assert cache_lookup_many({key: None, short: None}, now=T0 + dt.timedelta(seconds=9)).keys() == {
        key,
        short,
    }
    later = T0 + dt.timedelta(seconds=10)
    assert cache_lookup_many({key: None, short: None}, now=later).keys() == {key}
    assert cache_evict(now=later) == {"expired": 1, "lru": 0}
    assert list(CacheEntry.objects.values_list("key", flat=True)) == [key]
    assert cache_evict(now=T0 + dt.timedelta(seconds=3600)) == {"expired": 1, "lru": 0}


def test_lru_eviction_at_the_entry_bound_spares_the_recently_hit(settings):
    settings.LLMQUEUE = {"CACHE_MAX_ENTRIES": 10, "CACHE_TTL_S": 3600}
    keys = [
        store(i, at=T0 + dt.timedelta(seconds=i), ttl=10 if i == 5 else None) for i in range(12)
    ]
    hit(keys[0], at=T0 + dt.timedelta(seconds=20))
    hit(keys[1], at=T0 + dt.timedelta(seconds=21))
    evicted = cache_evict(now=T0 + dt.timedelta(seconds=30))
    # k5 expired; then, 11 > 10: the least recently used go, down to 9 (a batch of 2)
    assert evicted == {"expired": 1, "lru": 2}
    left = set(CacheEntry.objects.values_list("key", flat=True))
    assert left == {keys[i] for i in (0, 1, 4, 6, 7, 8, 9, 10, 11)}
    assert cache_evict(now=T0 + dt.timedelta(seconds=31)) == {"expired": 0, "lru": 0}


def test_lru_eviction_at_the_byte_bound(settings):
    settings.LLMQUEUE = {"CACHE_MAX_BYTES": 1000}
    keys = [store(i, at=T0 + dt.timedelta(seconds=i), size=200) for i in range(6)]  # ~1212 B
    cache_evict(now=T0 + dt.timedelta(seconds=10))
    left = list(CacheEntry.objects.order_by("used_at").values_list("key", flat=True))
    assert left == keys[2:]  # 4 x ~202 B <= 900 B
    assert sum(CacheEntry.objects.values_list("size_bytes", flat=True)) <= 900


def test_writes_evict_by_themselves_once_per_interval(
    user, echo_endpoint, settings, django_capture_on_commit_callbacks
):
    settings.LLMQUEUE = {"CACHE_MAX_ENTRIES": 3, "CACHE_EVICT_INTERVAL_S": 0}
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(4):
            job_submit(owner=user, spec=spec(f"q{i}"))
            run_due()
    assert CacheEntry.objects.count() <= 3


def test_a_rewrite_replaces_the_answer_and_keeps_the_hit_count():
    key = store(1, at=T0)
    hit(key, at=T0 + dt.timedelta(seconds=1))
    cache_store_many(
        [StoreItem(key=key, kind="chat", model="m", response={"new": True})],
        now=T0 + dt.timedelta(seconds=5),
    )
    entry = CacheEntry.objects.get()
    assert entry.response == {"new": True} and entry.hits == 1
    assert entry.created_at == T0 + dt.timedelta(seconds=5)


def test_purge_by_key_and_of_the_expired():
    now = timezone.now()
    a = store(1, at=now)
    store(2, at=now - dt.timedelta(seconds=10), ttl=1)
    store(3, at=now)
    assert cache_purge(keys=[a]) == 1
    assert cache_purge(expired=True) == 1
    assert CacheEntry.objects.count() == 1


def test_deleting_a_user_deletes_their_answers(user, echo_endpoint):
    job_submit(owner=user, spec=spec())
    run_due()
    user.delete()
    assert not CacheEntry.objects.exists()


# --- metrics --------------------------------------------------------------------------------------


def value(metric) -> float:
    return metric._value.get()


def test_hits_and_misses_are_counted_by_level(
    client, user, echo_endpoint, django_capture_on_commit_callbacks
):
    hits = {level: value(cache_metrics.HITS.labels(level)) for level in ("l1", "db")}
    misses = value(cache_metrics.MISSES)
    followers = value(cache_metrics.FOLLOWERS)
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=spec("m"))
        job_submit(owner=user, spec=spec("m"))
    assert value(cache_metrics.MISSES) == misses + 2
    assert value(cache_metrics.FOLLOWERS) == followers + 1
    run_due()
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=spec("m"))
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=user, spec=spec("m"))
    assert value(cache_metrics.HITS.labels("db")) == hits["db"] + 1
    assert value(cache_metrics.HITS.labels("l1")) == hits["l1"] + 1
    text = client.get("/metrics").content.decode()
    for name in (
        "llmqueue_cache_hits_total",
        "llmqueue_cache_misses_total",
        "llmqueue_cache_entries 1.0",
        "llmqueue_cache_bytes",
        "llmqueue_cache_hit_ratio",
    ):
        assert name in text


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the Redis level needs REDIS_URL")
def test_redis_serves_a_copy_to_a_process_without_one(
    user, echo_endpoint, django_capture_on_commit_callbacks
):
    job_submit(owner=user, spec=spec("r"))
    run_due()
    with django_capture_on_commit_callbacks(execute=True):
        assert job_submit(owner=user, spec=spec("r"))[0].cache_hit  # from the db, copied up
    local_clear()  # as another web process: no L1 copy
    before = value(cache_metrics.HITS.labels("redis"))
    with django_capture_on_commit_callbacks(execute=True):
        assert job_submit(owner=user, spec=spec("r"))[0].cache_hit
    assert value(cache_metrics.HITS.labels("redis")) == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_bulk_twin_of_a_leader_finishing_meanwhile_is_not_left_behind(user, echo_endpoint):
    """PostgreSQL: the leader's answer is being recorded (its row locked, not yet committed)
    while a bulk submission adds a twin. The twin follows it unlocked, and once committed
    waits for the leader and takes its answer. (On SQLite the two simply take turns.)"""
    leader, _ = job_submit(owner=user, spec=spec("race"))
    with transaction.atomic():
        (claim,) = jobs_claim(limit=1)
    recording, go = threading.Event(), threading.Event()

    def finish() -> None:
        try:
            with transaction.atomic():
                jobs_record(
                    [
                        attempt(
                            claim,
                            started_at=timezone.now(),
                            duration_ms=1.0,
                            outcome=Outcome.SUCCESS,
                            http_status=200,
                            body={"answer": "raced"},
                        )
                    ]
                )
                recording.set()
                go.wait(10)
        finally:
            connections.close_all()

    worker = threading.Thread(target=finish)
    worker.start()
    assert recording.wait(10)
    if connections["default"].vendor == "postgresql":
        threading.Timer(0.5, go.set).start()  # the leader commits while the twin is settled
    else:
        go.set()  # SQLite: the record step commits first (writers take turns); the twin hits
        worker.join(15)
    _, (twin,) = jobs_submit_many(owner=user, specs=[spec("race")])
    worker.join(15)
    twin = fresh(twin)
    assert twin.status == Status.SUCCEEDED and twin.cache_hit
    assert twin.result == {"answer": "raced"} and fresh(leader).status == Status.SUCCEEDED
