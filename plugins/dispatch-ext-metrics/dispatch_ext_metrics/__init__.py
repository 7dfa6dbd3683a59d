"""OpenTelemetry metrics for dispatch-ext: a counter per lifecycle event, duration histograms.

Installed, it is discovered under the entry-point name ``metrics``; in code::

    from dispatch_ext_metrics import MetricsExtension

    engine = Engine(extensions=[MetricsExtension(meter_provider=provider)])
"""

from __future__ import annotations

from .extension import METER_NAME, MetricsExtension
from .instruments import COUNTERS, HISTOGRAMS, InstrumentSpec

__version__ = "0.1.0"

__all__ = [
    "COUNTERS",
    "HISTOGRAMS",
    "METER_NAME",
    "InstrumentSpec",
    "MetricsExtension",
    "__version__",
]
