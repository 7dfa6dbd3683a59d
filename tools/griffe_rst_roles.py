"""A griffe extension for the docs build: turn reST roles in docstrings into links.

The docstrings of dispatch-ext use reST roles (``:func:`on_job_dlq```,
``:class:`~dispatch_ext.errors.RegistrationError```), which read well in ``help()`` and
in editors. mkdocstrings renders Markdown, so this extension rewrites each role into a
cross-reference (an optional autoref: a link when the target is documented, plain code
otherwise) and a reST ``::`` before a literal block into ``:``.

Relative targets are looked up the way a reader would: in the object itself, then in
each enclosing scope up to the module, then from the top-level package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`")
_LITERAL_BLOCK = re.compile(r"(?<=\S)::(?=\n\s*\n)")


class RstRoles(griffe.Extension):
    """Rewrites reST roles into autorefs once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None or (":" not in docstring.value):
            return

        def link(match: re.Match[str]) -> str:
            raw = match.group("target").strip()
            short = raw.startswith("~")
            target = raw.lstrip("~.")
            text = target.rsplit(".", 1)[-1] if short else target
            path = _resolve(obj, loader, target)
            if path is None:
                return f"`{text}`"
            return f'<autoref identifier="{path}" optional><code>{text}</code></autoref>'

        value = _ROLE.sub(link, docstring.value)
        docstring.value = _LITERAL_BLOCK.sub(":", value)


def _resolve(obj: griffe.Object, loader: griffe.GriffeLoader, target: str) -> str | None:
    scopes: list[str] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    candidates = [f"{s}.{target}" for s in scopes] + [target]
    for candidate in candidates:
        try:
            found = loader.modules_collection[candidate]
        except (KeyError, ValueError, griffe.AliasResolutionError):
            continue
        try:
            return str(found.final_target.path) if isinstance(found, griffe.Alias) else found.path
        except griffe.AliasResolutionError:
            return str(found.path)
    return None
