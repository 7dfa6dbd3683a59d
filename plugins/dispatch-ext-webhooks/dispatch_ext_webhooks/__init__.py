"""Signed webhooks for dispatch-ext: every lifecycle event, delivered from a durable outbox.

Installed, it is discovered under the entry-point name ``webhooks``; in code::

    from dispatch_ext_webhooks import WebhookExtension

    hooks = WebhookExtension(url="https://example.com/hooks", secret="whsec_...")
    engine = Engine(extensions=[hooks])
"""

from __future__ import annotations

from .events import EVENT_TYPES, HOOK_EVENTS
from .extension import DEFAULT_OUTBOX, WebhookExtension
from .outbox import FailedDelivery
from .settings import Endpoint, Secret, generate_secret

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_OUTBOX",
    "EVENT_TYPES",
    "HOOK_EVENTS",
    "Endpoint",
    "FailedDelivery",
    "Secret",
    "WebhookExtension",
    "__version__",
    "generate_secret",
]
