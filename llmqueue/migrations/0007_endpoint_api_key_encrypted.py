"""Endpoint.api_key is stored encrypted (llmqueue.db.fields): the column becomes text (a
Fernet token is longer than the key), then every plain key is encrypted in place.

The rows are read and written with plain SQL: the historical model's field would try to
decrypt the plain keys it reads."""

from typing import Any

from django.db import migrations

import llmqueue.db.fields
from llmqueue.db.fields import secret_decrypt, secret_encrypt


def _convert(schema_editor: Any, how: Any) -> None:
    connection = schema_editor.connection
    table = connection.ops.quote_name("llmqueue_endpoint")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, api_key FROM {table} WHERE api_key <> ''")
        rows = cursor.fetchall()
        for pk, value in rows:
            cursor.execute(f"UPDATE {table} SET api_key = %s WHERE id = %s", [how(value), pk])


def encrypt_plain_keys(apps: Any, schema_editor: Any) -> None:
    _convert(schema_editor, secret_encrypt)


def decrypt_keys(apps: Any, schema_editor: Any) -> None:
    _convert(schema_editor, secret_decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("llmqueue", "0006_job_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="endpoint",
            name="api_key",
            field=llmqueue.db.fields.EncryptedTextField(blank=True, default=""),
        ),
        migrations.RunPython(encrypt_plain_keys, decrypt_keys, elidable=False),
    ]
