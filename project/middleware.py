"""WhiteNoise, able to run in Django's async middleware chain.

WhiteNoise 6's middleware is sync only: under ASGI, Django would then run every request below
it (the views included) on a thread of its own for the whole request, and a request waiting
for its job (/v1, ?wait=) would hold that thread (llmqueue.jobs.waiting). This one serves
static files the same way, from a thread of the shared pool, and passes every other request
on without one.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._serve_async(request)
        return super().__call__(request)

    async def _serve_async(self, request: Any) -> Any:
        path = request.path_info
        if self.autorefresh:
            # finding a file may touch the disk: a thread, but only for static URLs
            found = (
                await sync_to_async(self.find_file, thread_sensitive=False)(path)
                if path.startswith(self.static_prefix)
                else None
            )
        else:
            found = self.files.get(path)
        if found is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(found, request)
        return await self.get_response(request)
