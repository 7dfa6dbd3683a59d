"""The ``dispatch-ext`` command group; subcommands live in sibling modules."""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__


def _not_a_directory(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a directory given as --config, saying what to pass instead."""
    if value is not None and Path(value).is_dir():
        from ..config import DEFAULT_CONFIG_FILE

        inside = Path(value) / DEFAULT_CONFIG_FILE
        example = f" (such as {inside})" if inside.is_file() else ""
        raise click.BadParameter(
            f"{value} is a directory, not a file; pass the path of a TOML file{example}"
        )
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dispatch-ext")
@click.option(
    "--config",
    "config_path",
    type=click.Path(),
    metavar="FILE",
    default=None,
    callback=_not_a_directory,
    help=(
        "TOML configuration file (default: the file named by DISPATCH_CONFIG, else "
        "./dispatch.toml when present)."
    ),
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Lifecycle extensions for job dispatchers: list, check and run them."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
