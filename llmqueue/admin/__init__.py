"""The Django admin: endpoints (``endpoints``), jobs and dead letters with one-click retry
(``jobs``), rate limits and quotas (``limits``), API keys (``keys``) and the response cache
(``cache``). Each module registers its own models; all of them are thin over the services
below."""

from llmqueue.admin import cache, endpoints, jobs, keys, limits

__all__ = ["cache", "endpoints", "jobs", "keys", "limits"]
