"""``dispatch-ext new``: scaffold an extension distribution from the bundled templates."""

from __future__ import annotations

import re
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import __version__
from .app import main

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

__all__ = ["Names", "new", "scaffold", "scaffold_names"]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_PREFIXES = ("dispatch-ext-", "dispatch_ext_")


@dataclass(frozen=True)
class Names:
    """The names derived from an extension's name."""

    name: str
    """The extension (and entry-point) name, as given: ``slack-alerts``."""
    distribution: str
    """``dispatch-ext-slack-alerts``."""
    package: str
    """``dispatch_ext_slack_alerts``."""
    class_name: str
    """``SlackAlertsExtension``: each word capitalised, joined, then ``Extension``."""
    title: str
    """``Slack alerts``."""


def scaffold_names(name: str) -> Names:
    """Check an extension name and derive the others from it.

    The name is split into words at ``-`` and ``_``. The distribution joins them with
    ``-`` after ``dispatch-ext-``, the package with ``_`` after ``dispatch_ext_``, and the
    class name is each word capitalised, joined, then ``Extension``: ``slack-alerts``
    gives ``SlackAlertsExtension``, ``s3_sync`` gives ``S3SyncExtension`` and ``a_b-c``
    gives ``ABCExtension``.

    Raises:
        ValueError: The name is not lowercase letters and digits in words joined by
            ``-`` or ``_``, starting with a letter; the message suggests one that is.
    """
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            short = name[len(prefix) :]
            raise ValueError(
                f"give the extension's own name, without the prefix: "
                f"'dispatch-ext new {short}' creates the distribution dispatch-ext-{short}"
            )
    if not _NAME.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        suggestion = re.sub(r"^[0-9-]+", "", suggestion)
        hint = f"; for example {suggestion!r}" if suggestion else ""
        raise ValueError(
            f"{name!r} is not a valid extension name: use lowercase letters and digits, "
            f"in words joined by '-' or '_', starting with a letter{hint}"
        )
    words = re.split(r"[-_]", name)
    return Names(
        name=name,
        distribution="dispatch-ext-" + "-".join(words),
        package="dispatch_ext_" + "_".join(words),
        class_name="".join(word.capitalize() for word in words) + "Extension",
        title=" ".join(words).capitalize(),
    )


def _templates() -> Traversable:
    return resources.files("dispatch_ext").joinpath("scaffold")


def _walk(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.is_dir():
            found.extend(_walk(item, f"{prefix}{item.name}/"))
        elif item.name.endswith(".tmpl"):
            found.append((prefix + item.name.removesuffix(".tmpl"), item))
    return found


def _target(relative: str, names: Names) -> str:
    if relative.startswith("package/"):
        return names.package + relative.removeprefix("package")
    if relative == "gitignore":
        return ".gitignore"
    return relative


def scaffold(name: str, directory: Path | str = ".") -> Path:
    """Write the distribution ``dispatch-ext-<name>`` into ``directory``; return its folder.

    Raises:
        ValueError: ``name`` is not a valid extension name.
        FileNotFoundError: ``directory`` does not exist (it is not created).
        NotADirectoryError: ``directory`` is a file.
        FileExistsError: The folder exists already (nothing is overwritten).
    """
    names = scaffold_names(name)
    parent = Path(directory)
    if not parent.is_dir():
        where = parent.absolute()
        if parent.exists():
            raise NotADirectoryError(
                f"{where} is not a directory; nothing was written. Pass an existing folder "
                f"with --directory"
            )
        raise FileNotFoundError(
            f"{where} does not exist; nothing was written. Pass an existing folder with "
            f"--directory, or create it first (mkdir -p {where})"
        )
    root = parent / names.distribution
    if root.exists():
        raise FileExistsError(
            f"{root.resolve()} exists already; nothing was written. Pick another name, or another "
            f"folder with --directory"
        )
    values = {
        "name": names.name,
        "distribution": names.distribution,
        "package": names.package,
        "class_name": names.class_name,
        "title": names.title,
        "dispatch_version": ".".join(__version__.split(".")[:2]),
    }
    files = [
        (_target(relative, names), string.Template(template.read_text("utf-8")).substitute(values))
        for relative, template in _walk(_templates())
    ]
    root.mkdir(parents=True)
    for relative, text in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@main.command("new")
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Existing folder in which to create the distribution's folder.",
)
def new(name: str, directory: Path) -> None:
    """Scaffold an extension distribution, dispatch-ext-NAME.

    NAME is the extension's name: lowercase words joined by '-' or '_' (e.g.
    slack-alerts). The new folder holds a pyproject.toml that registers the extension
    in the entry-point group dispatch.extensions, a package dispatch_ext_NAME with the
    extension class, tests that use the fixtures of dispatch_ext.testing, and a README.
    An existing folder is never overwritten.

    The class is named after NAME's words (split at '-' and '_'), each capitalised,
    joined, then 'Extension': slack-alerts gives SlackAlertsExtension, a_b-c gives
    ABCExtension.
    """
    try:
        root = scaffold(name, directory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    except (FileExistsError, FileNotFoundError, NotADirectoryError) as exc:
        raise click.ClickException(str(exc)) from None
    names = scaffold_names(name)
    click.echo(f"Created {names.distribution} in {root.resolve()}:")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(root)}")
    click.echo(
        "\nNext:\n"
        f"  cd {root}\n"
        '  python -m pip install -e ".[test]"\n'
        f"  dispatch-ext list      # {names.name} is listed as loaded\n"
        "  python -m pytest"
    )
