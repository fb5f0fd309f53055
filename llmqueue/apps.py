from django.apps import AppConfig


class LlmqueueConfig(AppConfig):
    name = "llmqueue"
    verbose_name = "llmqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the app registry is ready, as Django asks: the system checks and the
        # signal receivers register themselves; the scrape-time collectors join /metrics.
        from llmqueue import checks, metrics  # noqa: F401
        from llmqueue.cache.metrics import CacheStateCollector
        from llmqueue.jobs.collectors import QueueStateCollector
        from llmqueue.worker import signals  # noqa: F401
        from llmqueue.worker.heartbeat import HeartbeatCollector

        metrics.STATE_REGISTRY.register(QueueStateCollector())
        metrics.STATE_REGISTRY.register(CacheStateCollector())
        metrics.STATE_REGISTRY.register(HeartbeatCollector())
