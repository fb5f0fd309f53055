"""Settings for the test run: the project's, with this run's own django-q2 queue name.

A Redis broker may be shared with other runs (or a developer's `make run`); a queue name of
its own keeps this run's tasks away from their clusters. Test clusters get the same name.
"""

import os
import uuid

os.environ.setdefault("Q_CLUSTER_NAME", f"llmqueue-test-{uuid.uuid4().hex[:8]}")

from project.settings import *  # noqa: F403

# PBKDF2's many rounds are the production choice; in tests they only cost time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
