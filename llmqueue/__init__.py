"""llmqueue: a durable, prioritized, rate-limited queue in front of LLM endpoints."""
