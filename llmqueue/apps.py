from django.apps import AppConfig


class LlmqueueConfig(AppConfig):
    name = "llmqueue"
    verbose_name = "llmqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from llmqueue import checks  # noqa: F401  (registers the system checks)
        from llmqueue.worker import signals  # noqa: F401  (connects the receivers)
