"""Entry point of the `neuro` command: a click group that each feature area adds commands to."""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from neuro_bitnet import __version__
from neuro_bitnet.errors import NeuroError

# The module of each command: it defines a click command or group named `command` called NAME.
# Keep one module per command area (cli/<area>_cmd.py). A module is imported only when its
# command runs (or a help text lists it), so `neuro ask` does not load what `neuro index` needs.
COMMANDS: dict[str, str] = {
    name: f"neuro_bitnet.cli.{name}_cmd"
    for name in ("ask", "chat", "bench", "model", "config", "doctor", "serve", "daemon", "mcp", "index",
                 "search", "stats")
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use, from COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = importlib.import_module(module).command
        if command.name != cmd_name:
            raise RuntimeError(f"{module} defines the command {command.name!r}, not {cmd_name!r}")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neuro")
def cli() -> None:
    """neuro-bitnet: BitNet b1.58 language models on your CPU."""


def _debug_env() -> bool:
    from neuro_bitnet.config import setting

    return bool(setting("debug"))


def _verbose(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--verbose" in args or "-v" in args or _debug_env()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors become one clear line on stderr and a meaningful exit code.

    Exit codes: 0 ok, 1 general error, 2 usage/config, 3 model not found, 4 download,
    5 engine, 130 interrupted. `--verbose` (or NEURO_BITNET_DEBUG=1) adds tracebacks.
    """
    try:
        cli.main(args=argv, prog_name="neuro", standalone_mode=False)
    except NeuroError as exc:
        if _verbose(argv):
            traceback.print_exc()
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
    except Exception as exc:  # a bug: say so in one line unless asked for details
        if _verbose(argv):
            traceback.print_exc()
        click.secho(f"error: unexpected {type(exc).__name__}: {exc} (run with --verbose for details)",
                    fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
