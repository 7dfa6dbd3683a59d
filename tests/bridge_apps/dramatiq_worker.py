"""``dramatiq bridge_apps.dramatiq_worker``: the test broker, configured by the environment.

``BRIDGE_BROKER_KIND`` (``redis`` or ``rabbitmq``), ``BRIDGE_BROKER_URL`` and
``BRIDGE_QUEUE`` select the broker and the queue. Extensions are discovered
(``DISPATCH_CONFIG``).
"""

from __future__ import annotations

import os

import dramatiq

from bridge_apps.dramatiq_app import make_broker

broker = make_broker(
    os.environ["BRIDGE_BROKER_KIND"],
    os.environ["BRIDGE_BROKER_URL"],
    os.environ["BRIDGE_QUEUE"],
)
dramatiq.set_broker(broker)
