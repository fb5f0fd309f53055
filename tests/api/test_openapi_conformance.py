"""schemathesis over /api/schema/: every operation, fed what the document says it takes,
answers without a server error and with what the document says it answers.

In process (schemathesis' WSGI support: no server), as a staff user with an API key so that
the staff-only endpoints are exercised too. Bounded and derandomized: the same examples every
run, ~25 per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from llmqueue.jobs import job_submit, jobs_submit_many
from llmqueue.keys import apikey_create
from llmqueue.models import Job, Status
from project.wsgi import application
from tests.factories import chat_spec

pytestmark = pytest.mark.django_db

EXAMPLES = 25


@pytest.fixture
def keep_the_test_connection():
    """The WSGI handler closes the database connection after each request (Django's test
    client unhooks that too): here it would close the test's transaction."""
    hooks = (request_started, request_finished)
    for signal in hooks:
        signal.disconnect(close_old_connections)
    yield
    for signal in hooks:
        signal.connect(close_old_connections)


def test_the_api_answers_as_its_document_says(staff, echo_endpoint, keep_the_test_connection):
    plain, _ = apikey_create(owner=staff, name="schemathesis")
    # Something to find: a queued job (no endpoint, no batch), a batch's, a dead one.
    alone = job_submit(owner=staff, spec=chat_spec())[0]
    jobs_submit_many(owner=staff, specs=[chat_spec(), chat_spec()], name="b")
    dead = job_submit(owner=staff, spec=chat_spec())[0]
    Job.objects.filter(pk=dead.pk).update(status=Status.DEAD, error="upstream said no")
    ids = {"/api/jobs/{id}": [alone.pk, dead.pk], "/api/endpoints/{id}": [echo_endpoint.pk]}
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    operations = [result.ok() for result in schema.get_all_operations()]
    # The endpoints last: a fuzzed DELETE may remove the one that serves the jobs' model.
    operations.sort(key=lambda op: op.path.startswith("/api/endpoints"))
    assert len(operations) >= 14, [op.label for op in operations]
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, plain, ids)
        except BaseException as exc:  # every operation's failures, then report them all
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {exc!r}")
    assert not failures, "\n\n".join(failures)


def _fuzz(operation, plain: str, ids: dict[str, list[int]]) -> None:
    # Ids of real objects half the time: random ones only ever meet 404s.
    known = next((v for k, v in ids.items() if operation.path.startswith(k)), None)
    strategy = operation.as_strategy()
    if known:
        strategy = strategy | st.sampled_from(known).flatmap(
            lambda pk: operation.as_strategy(path_parameters={"id": pk})
        )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {plain}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    run()
