"""dispatch-ext-audit: an audit log of job, workflow, cron and shutdown events, as JSON lines.

Installed, it registers the extension ``audit`` in the ``dispatch.extensions`` group; its
settings come from ``[extensions.audit]`` in ``dispatch.toml`` (``path``, ``logger``,
``flush_interval``) or from ``DISPATCH_AUDIT_PATH``.
"""

from __future__ import annotations

from .extension import DEFAULT_PATH, PATH_ENV, AuditExtension

__all__ = ["DEFAULT_PATH", "PATH_ENV", "AuditExtension"]
__version__ = "0.1.0"
