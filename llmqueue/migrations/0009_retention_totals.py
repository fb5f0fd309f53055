"""Lifetime totals of finished jobs (llmqueue.jobs.totals), seeded from the jobs that exist:
every status but the live ones (queued, running), so that a terminal status added by another
migration counts too. Also the dead letters' index, now in id order."""

from typing import Any

from django.db import migrations, models
from django.db.models import Count


def _seed(apps: Any, schema_editor: Any) -> None:
    Job = apps.get_model("llmqueue", "Job")
    JobTotal = apps.get_model("llmqueue", "JobTotal")
    rows = (
        Job.objects.using(schema_editor.connection.alias)
        .exclude(status__in=["queued", "running"])
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    JobTotal.objects.using(schema_editor.connection.alias).bulk_create(
        JobTotal(status=status, shard=0, n=n) for status, n in rows
    )


class Migration(migrations.Migration):

    dependencies = [
        ('llmqueue', '0008_api_keys'),
    ]

    operations = [
        migrations.CreateModel(
            name='JobTotal',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(max_length=10)),
                ('shard', models.PositiveSmallIntegerField(default=0)),
                ('n', models.PositiveBigIntegerField(default=0)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('status', 'shard'), name='jobtotal_key')],
            },
        ),
        migrations.RunPython(_seed, migrations.RunPython.noop),
        # The dead letters' index in id order (the newest read without a sort).
        migrations.RemoveIndex(
            model_name='job',
            name='job_dead',
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status', 'dead')), fields=['status', 'id'], name='job_dead'),
        ),
    ]
