"""The OpenAI-compatible surface, ``/v1``: what the ``openai`` SDKs and every tool built on them
speak, over the durable queue.

    GET  /v1/models                   the models of enabled endpoints
    POST /v1/chat/completions         each call is a job through the intake; the answer is
    POST /v1/completions              the upstream's body once the job ends, with the job id
    POST /v1/embeddings               in ``X-Llmqueue-Job-Id``
    /v1/files, /v1/batches            the Files and Batch APIs (``files``, ``batches``)

The calls wait in async views on the process's one poller (``llmqueue.jobs.waiting``), so a
thousand waiting clients hold neither a thousand threads nor a thousand queries a tick.
"""
