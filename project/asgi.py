import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Under ASGI each request's sync code runs on a thread of its own, so a persistent connection
# is never reused by the next request: it only stays open, one per finished request, until
# its thread is collected (PostgreSQL's max_connections runs out). The web process closes its
# connections at the end of each request; the workers keep theirs (CONN_MAX_AGE).
os.environ.setdefault("CONN_MAX_AGE", "0")
application = get_asgi_application()
