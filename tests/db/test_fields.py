"""Endpoint API keys at rest: only Fernet tokens in the table, rotation, a clear error for a
wrong key, and the migration that encrypts the plain keys already stored."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from llmqueue.db.fields import FieldKeyError
from llmqueue.endpoints.pools import dispatch_pools
from llmqueue.models import Endpoint
from tests.factories import make_endpoint

SECRET = "sk-live-PLAIN-0123456789"
K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))


def stored() -> list[str]:
    """The api_key column as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM llmqueue_endpoint ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_the_table_holds_no_plain_key_and_the_worker_gets_the_plain_one(settings) -> None:
    settings.LLMQUEUE = {"FIELD_KEYS": K1}
    ep = make_endpoint(api_key=SECRET)
    make_endpoint(name="keyless", api_key="")
    token, empty = stored()
    assert SECRET not in token and "PLAIN" not in token
    assert Fernet(K1).decrypt(token.encode()).decode() == SECRET
    assert empty == ""  # no key is no secret
    assert Endpoint.objects.get(pk=ep.pk).api_key == SECRET
    [seat] = [s for s in dispatch_pools().by_model["echo"] if s.id == ep.pk]
    assert seat.target.api_key == SECRET  # what the drain sends as Authorization: Bearer


@pytest.mark.django_db
def test_without_field_keys_a_key_derived_from_secret_key_encrypts(settings) -> None:
    settings.LLMQUEUE = {}
    make_endpoint(api_key=SECRET)
    [token] = stored()
    assert token and SECRET not in token
    assert Endpoint.objects.get().api_key == SECRET
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789-abcdefghijklmnop"
    with pytest.raises(FieldKeyError):
        Endpoint.objects.get()


@pytest.mark.django_db
def test_rotation_re_encrypts_every_row_with_the_first_key(settings) -> None:
    settings.LLMQUEUE = {"FIELD_KEYS": K1}
    for i in range(3):
        make_endpoint(name=f"ep{i}", api_key=f"{SECRET}-{i}")
    settings.LLMQUEUE = {"FIELD_KEYS": f"{K2},{K1}"}  # the new key first, the old one still read
    call_command("llmqueue_rotate_keys", verbosity=0)
    settings.LLMQUEUE = {"FIELD_KEYS": K2}  # the old key dropped
    assert sorted(Endpoint.objects.values_list("api_key", flat=True)) == [
        f"{SECRET}-{i}" for i in range(3)
    ]
    for token in stored():
        assert Fernet(K2).decrypt(token.encode()).decode().startswith(SECRET)


@pytest.mark.django_db
def test_a_wrong_key_is_a_clear_error_without_the_secret(settings) -> None:
    settings.LLMQUEUE = {"FIELD_KEYS": K1}
    make_endpoint(api_key=SECRET)
    settings.LLMQUEUE = {"FIELD_KEYS": K3}
    with pytest.raises(FieldKeyError, match="LLMQUEUE_FIELD_KEYS") as caught:
        Endpoint.objects.get()
    assert SECRET not in str(caught.value) and K1 not in str(caught.value)


@pytest.mark.django_db
def test_a_key_that_is_not_a_fernet_key_fails_the_checks(settings) -> None:
    from llmqueue.checks import check_settings

    settings.LLMQUEUE = {"FIELD_KEYS": f"{K1},not-a-key"}
    [error] = check_settings()
    assert error.id == "llmqueue.E017"
    assert "key #2" in error.msg and "not-a-key" not in error.msg


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_the_plain_keys_already_stored(settings) -> None:
    settings.LLMQUEUE = {"FIELD_KEYS": K1}
    before, after = (
        ("llmqueue", "0006_job_indexes"),
        ("llmqueue", "0007_endpoint_api_key_encrypted"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        old_endpoint = executor.loader.project_state([before]).apps.get_model(
            "llmqueue", "Endpoint"
        )
        old_endpoint.objects.create(name="old", base_url="http://old/v1", api_key=SECRET)
        assert stored() == [SECRET]  # as 0006 kept it
        executor = MigrationExecutor(connection)
        executor.migrate([after])
        [token] = stored()
        assert SECRET not in token
        assert Fernet(K1).decrypt(token.encode()).decode() == SECRET
        assert Endpoint.objects.get(name="old").api_key == SECRET
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
