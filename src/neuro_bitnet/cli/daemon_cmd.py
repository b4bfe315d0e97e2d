"""`neuro daemon status|stop`: manage a server started with `neuro serve --detach`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

_pid_option = click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="The daemon's pid file (default: the user state dir's daemon.pid).")


@click.group("daemon")
def command() -> None:
    """Check on or stop the background server (start it with `neuro serve --detach`)."""


@command.command("status")
@_pid_option
@click.option("--url", default=None, help="Daemon URL to probe when no pid file names one. [env NEURO_DAEMON_URL]")
@click.option("--api-key", default=None, help="[env NEURO_DAEMON_API_KEY]")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(pid_file: Path | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Show whether the daemon runs, where, and what it serves (exit 1 if it does not run)."""
    from neuro_bitnet.backends.daemon_client import DaemonClient
    from neuro_bitnet.config import env_url
    from neuro_bitnet.errors import DaemonError
    from neuro_bitnet.server import daemon

    pid_file = pid_file or daemon.default_pid_file()
    record = daemon.running_record(pid_file)
    target = (record.url if record and record.url else None) or url or env_url()
    report: dict = {"running": False, "pid": record.pid if record else None, "url": target,
                    "pid_file": str(pid_file)}
    try:
        health = DaemonClient(target, api_key=api_key).health()
        report.update(running=True, health=health)
    except DaemonError as exc:
        report["error"] = str(exc)
        if record is not None:  # alive but not answering: still loading, or stuck
            report["running"] = True
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif "health" in report:
        h = report["health"]
        who = f"pid {record.pid}" if record else "no pid file"
        click.echo(f"running: {target} ({who})")
        click.echo(f"model: {h.get('model')}  ctx: {h.get('ctx_size')}  uptime: {_duration(h.get('uptime', 0))}  "
                   f"auto_translate: {h.get('auto_translate')}")
        queue = h.get("queue", {})
        click.echo(f"queue: {queue.get('waiting', 0)} waiting, {'busy' if queue.get('busy') else 'idle'}; "
                   f"{h.get('completed', 0)} requests done")
    elif record is not None:
        click.echo(f"process {record.pid} is alive but does not answer at {target}: {report['error']}")
    else:
        click.echo(f"not running (no live daemon in {pid_file}, nothing answers at {target})")
    if not report["running"]:
        sys.exit(1)


@command.command("stop")
@_pid_option
@click.option("--url", default=None, help="Daemon URL to stop when no pid file names one (a foreground "
                                          "`neuro serve`). [env NEURO_DAEMON_URL]")
@click.option("--api-key", default=None, help="[env NEURO_DAEMON_API_KEY]")
@click.option("--timeout", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for answers in progress to finish.")
@click.option("--force", is_flag=True, help="Kill the daemon if it has not exited after --timeout.")
def stop(pid_file: Path | None, url: str | None, api_key: str | None, timeout: float, force: bool) -> None:
    """Stop the daemon gracefully (SIGTERM: answers in progress finish first).

    Stops the daemon of the pid file, else the one answering at --url (the same one
    `neuro daemon status` reports).
    """
    from neuro_bitnet.config import env_url
    from neuro_bitnet.server import daemon

    pid_file = pid_file or daemon.default_pid_file()
    target = url or env_url()
    record = daemon.running_record(pid_file) or daemon.find_by_url(target, api_key)
    if record is None:
        click.echo(f"no daemon running (no live daemon in {pid_file}, nothing answers at {target})")
        return
    start = time.monotonic()
    daemon.stop(record, pid_file, timeout=timeout, force=force)
    where = f", {record.url}" if record.url else ""
    click.echo(f"stopped the daemon (pid {record.pid}{where}) in {time.monotonic() - start:.1f}s")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
