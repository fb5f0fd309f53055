"""Micro-batching end to end: a real qcluster merges embedding jobs into calls to a real stand-in,
and splits the answers back, job by job (llmqueue.worker.batching)."""

from __future__ import annotations

import math

import pytest
from django.db.models import Count

from llmqueue.jobs import jobs_submit_many
from llmqueue.models import Job, JobAttempt, Status
from llmqueue.standin.echo import echo_answer
from tests.factories import embedding_spec, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def statuses() -> dict[str, int]:
    return dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by())


def finished(n: int) -> bool:
    return Job.objects.filter(status__in=[Status.SUCCEEDED, Status.DEAD]).count() == n


def vector(text: str) -> list[float]:
    return echo_answer("embedding", {"input": text})["data"][0]["embedding"]


def words(text: str) -> int:
    return len(text.split())


def embedding_calls(standin) -> list[tuple[int, int]]:
    """(status, inputs) of each embeddings call the stand-in answered."""
    log = standin.log()
    return [
        (status, n)
        for (_, path, status, _), n in zip(log["calls"], log["inputs"], strict=True)
        if path == "/v1/embeddings"
    ]


def test_two_thousand_jobs_of_three_users_go_in_few_calls_and_each_gets_its_own_vector(
    cluster, standin
):
    make_endpoint(base_url=standin.base_url)
    users = [make_user() for _ in range(3)]
    # Texts of different lengths, so that usage shares differ from job to job.
    texts = {u.pk: [f"user {u.pk} text {i} " + "w " * (i % 7) for i in range(667)] for u in users}
    texts[users[2].pk].pop()  # 667 + 667 + 666 = 2000
    for u in users:
        jobs_submit_many(owner=u, specs=[embedding_spec(t) for t in texts[u.pk]])
    c = cluster()
    wait_until(lambda: finished(2000), timeout=180, what=f"2000 jobs ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 2000}
    calls = embedding_calls(standin)
    assert len(calls) <= math.ceil(2000 / 64) * 1.25, calls
    assert sum(n for _, n in calls) == 2000  # every input was sent once
    # each job keeps its own attempt, and gets the vector of its own input, alone at index 0
    assert JobAttempt.objects.count() == 2000
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    prompt_tokens = 0
    for u in users:
        jobs = Job.objects.filter(owner=u).values_list("payload", "result", "tokens_used")
        assert len(jobs) == len(texts[u.pk])
        for payload, result, tokens_used in jobs:
            (item,) = result["data"]
            assert item["index"] == 0
            assert item["embedding"] == vector(payload["input"])
            assert result["usage"]["total_tokens"] == tokens_used
            prompt_tokens += result["usage"]["prompt_tokens"]
    # the calls' usage, split over their jobs, adds up to what the stand-in charged for all
    assert prompt_tokens == sum(words(t) for ts in texts.values() for t in ts)
    assert "Traceback" not in c.output()


def test_a_poisoned_input_fails_its_own_job_alone(cluster, standin):
    make_endpoint(base_url=standin.base_url)
    a, b = make_user(), make_user()
    texts = [f"text {i}" for i in range(300)]
    texts[137] = "text 137 POISON"
    jobs_submit_many(owner=a, specs=[embedding_spec(t) for t in texts[::2]])
    jobs_submit_many(owner=b, specs=[embedding_spec(t) for t in texts[1::2]])
    cluster()
    wait_until(lambda: finished(300), timeout=120, what=f"300 jobs ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 299, Status.DEAD: 1}
    dead = Job.objects.get(status=Status.DEAD)
    assert dead.payload["input"] == "text 137 POISON"
    assert dead.owner == b
    assert dead.attempts == 1
    assert "HTTP 400" in dead.error
    assert "poisoned" in dead.error
    # nobody else spent more than the one attempt, and every answer is the job's own
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    for payload, result in Job.objects.filter(status=Status.SUCCEEDED).values_list(
        "payload", "result"
    ):
        assert result["data"][0]["embedding"] == vector(payload["input"])
    calls = embedding_calls(standin)
    rejected = [n for status, n in calls if status == 400]
    # One merged call was rejected, then its halves, recursively, down to the poisoned input
    # alone: 2 extra calls per halving of a batch of at most 64.
    assert rejected[-1] == 1
    assert 2 <= len(rejected) <= 1 + 6
    assert len(calls) <= 2 * math.ceil(300 / 64) + 2 * 6, calls


def test_batching_can_be_turned_off(cluster, standin):
    make_endpoint(base_url=standin.base_url)
    jobs_submit_many(owner=make_user(), specs=[embedding_spec(f"t {i}") for i in range(40)])
    cluster(LLMQUEUE_EMBED_BATCHING="false")
    wait_until(lambda: finished(40), timeout=60, what=f"40 jobs ({statuses()})")
    assert statuses() == {Status.SUCCEEDED: 40}
    assert embedding_calls(standin) == [(200, 1)] * 40
