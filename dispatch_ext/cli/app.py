"""The ``dispatch-ext`` command group; subcommands live in sibling modules."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dispatch-ext")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="DISPATCH_CONFIG",
    default=None,
    help="TOML configuration file (default: ./dispatch.toml when present).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Lifecycle extensions for job dispatchers: list, check and run them."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
