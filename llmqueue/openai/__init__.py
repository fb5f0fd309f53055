"""The OpenAI-compatible surface, ``/v1``: what the ``openai`` SDKs speak, over the queue."""
