"""``celery -A bridge_apps.celery_worker worker``: the test app, configured by the environment.

``BRIDGE_BROKER_URL`` and ``BRIDGE_QUEUE`` name the broker and the queue; ``BRIDGE_BEAT=1``
adds a one-second beat schedule. Extensions are discovered (``DISPATCH_CONFIG``).
"""

from __future__ import annotations

import os

from bridge_apps.celery_app import make_app

app = make_app(
    os.environ["BRIDGE_BROKER_URL"],
    os.environ["BRIDGE_QUEUE"],
    beat=os.environ.get("BRIDGE_BEAT") == "1",
)
