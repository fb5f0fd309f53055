"""Fixtures shared by every test: users, API clients, a stand-in endpoint, a real qcluster."""

from __future__ import annotations

import os
import uuid

# Before Django reads its settings: this run's django-q2 queue is its own, so that a Redis
# broker shared with other runs never hands this run's tasks to another run's cluster.
os.environ["Q_CLUSTER_NAME"] = f"llmqueue-test-{uuid.uuid4().hex[:8]}"

from tests.fixtures import *  # noqa: E402,F403
