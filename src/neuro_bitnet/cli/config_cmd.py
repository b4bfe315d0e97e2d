"""`neuro config` (alias `neuro doctor`): resolved settings, engine build, CPU, models present."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

from neuro_bitnet import __version__
from neuro_bitnet.cli.console import format_size, print_json
from neuro_bitnet.config import ENV_VARS, Settings, base_url, load_settings
from neuro_bitnet.errors import NeuroError
from neuro_bitnet.models.manager import ModelManager


def _settings_report(settings: Settings) -> dict[str, Any]:
    from neuro_bitnet.engine.heads import DEFAULT_HEAD
    from neuro_bitnet.models.catalog import DEFAULT_MODEL_ID
    from neuro_bitnet.retrieval.embedders.registry import DEFAULT_EMBEDDER
    from neuro_bitnet.retrieval.store import describe

    catalog = settings.catalog_path
    cli_path = settings.bitnet_cli_path
    values: dict[str, Any] = {
        "models_dir": str(settings.models_dir),
        "catalog_path": f"{catalog}" + ("" if catalog.is_file() else " (not present)"),
        "hf_endpoint": settings.hf_endpoint,
        "hf_token": "set" if settings.hf_token else "not set",
        "bitnet_cli_path": "not set" if cli_path is None else (
            f"{cli_path}" + ("" if os.access(cli_path, os.X_OK) and cli_path.is_file() else " (not an executable file)")
        ),
        "timeout": settings.timeout,
        "retries": settings.retries,
        "isa": settings.isa,
        "model": settings.model or f"{DEFAULT_MODEL_ID} (catalog default)",
        "head": settings.head or f"{DEFAULT_HEAD} (engine default)",
        "embedder": settings.embedder or f"{DEFAULT_EMBEDDER} (default)",
        "storage": describe(settings.storage),  # a URL's password is not shown
        "daemon_host": settings.daemon_host,
        "daemon_port": settings.daemon_port,
        "daemon_url": settings.daemon_url or base_url(settings.daemon_host, settings.daemon_port),
        "daemon_api_key": "set" if settings.daemon_api_key else "not set",
        "debug": settings.debug,
        "tokenizer": settings.tokenizer,
        "head_cache": "on" if settings.head_cache else "off",
        "kv_cache": settings.kv_cache,
    }
    return {
        name: {"value": value, "source": settings.source(name), "env": ENV_VARS[name]}
        for name, value in values.items()
    }


def _engine_report() -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
    }
    try:
        from neuro_bitnet.engine import _core

        report["core"] = f"built ({Path(_core.__file__).name})"
        features = _core.cpu_features()
        report["cpu_features"] = sorted(k for k, v in features.items() if v)
    except Exception as exc:  # the engine may be unbuilt or broken; report, do not crash
        report["core"] = f"not available: {type(exc).__name__}: {exc}"
        report["cpu_features"] = None
    return report


def _models_report(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    try:
        mm = ModelManager(settings)
        statuses = [mm.status(e) for e in mm.entries()]
    except NeuroError as exc:
        return [], str(exc)
    present = [
        {
            "id": st.entry.id,
            "state": st.state,
            "path": str(st.path),
            "size": st.size_on_disk or st.partial_bytes,
            "verified_by": st.verified_by,
        }
        for st in statuses
        if st.state in ("verified", "unverified", "partial")
    ]
    return present, None


def show_config(models_dir: Path | None, as_json: bool) -> None:
    """Print the doctor report; exit 1 if a problem was found."""
    settings = load_settings(models_dir=models_dir)
    report = {
        "settings": _settings_report(settings),
        "engine": _engine_report(),
    }
    models, catalog_problem = _models_report(settings)
    report["models"] = models
    problems = [catalog_problem] if catalog_problem else []
    if report["engine"]["cpu_features"] is None:
        problems.append(f"engine core {report['engine']['core']}")
    report["problems"] = problems
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    if problems:
        sys.exit(1)


def _print_report(report: dict[str, Any]) -> None:
    click.echo("settings")
    for name, item in report["settings"].items():
        value = item["value"]
        value = f"{value:g}s" if name == "timeout" else value
        origin = f"from {item['env']}" if item["source"] == "env" else item["source"]
        click.echo(f"  {name.ljust(16)} {value}  [{origin}]")
    engine = report["engine"]
    click.echo("engine")
    click.echo(f"  {'neuro-bitnet'.ljust(16)} {engine['version']} (Python {engine['python']}, {engine['platform']})")
    click.echo(f"  {'C core'.ljust(16)} {engine['core']}")
    features = engine["cpu_features"]
    shown = " ".join(features) if features else "none detected" if features == [] else "?"
    click.echo(f"  {'CPU features'.ljust(16)} {shown}")
    click.echo(f"  {'CPU cores'.ljust(16)} {engine['cpu_count']}")
    click.echo("models")
    for m in report["models"]:
        detail = m["verified_by"] or m["state"]
        click.echo(f"  {m['id'].ljust(16)} {detail}, {format_size(m['size'])}  {m['path']}")
    if not report["models"]:
        click.echo("  (none downloaded; try `neuro model download`)")
    for problem in report["problems"]:
        click.secho(f"problem: {problem}", fg="red", err=True)


def _make(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Override the models dir.")
    def _cmd(as_json: bool, models_dir: Path | None) -> None:
        show_config(models_dir, as_json)

    return _cmd


command = _make("config", "Show resolved settings, the engine build, CPU features and models present.")
doctor_command = _make("doctor", "Same as `neuro config`: settings, engine, CPU and models.")
