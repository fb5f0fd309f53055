"""The stand-in LLM endpoint (``server``) and the deterministic answers it gives (``echo``),
for tests, benchmarks and the demo endpoint of ``make run``. Run it with
``python -m llmqueue.standin --port 9001``."""
