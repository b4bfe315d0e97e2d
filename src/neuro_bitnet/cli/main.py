"""Entry point of the `neuro` command: a click group that each feature area adds commands to."""

from __future__ import annotations

import importlib
import sys

import click

from neuro_bitnet import __version__
from neuro_bitnet.errors import NeuroError

# Modules that define a click command or group named `command`; each is added to `neuro`.
# Keep one module per command area (cli/<area>_cmd.py).
COMMAND_MODULES: list[str] = [
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neuro")
def cli() -> None:
    """neuro-bitnet: BitNet b1.58 language models on your CPU."""


for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(_name).command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; `NeuroError`s become one clear line on stderr and their exit code."""
    try:
        cli.main(args=argv, prog_name="neuro", standalone_mode=False)
    except NeuroError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
