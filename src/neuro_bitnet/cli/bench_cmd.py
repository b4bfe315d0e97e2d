"""`neuro bench`: prefill and decode speed, load time and peak memory of the native engine."""

from __future__ import annotations

import json
from pathlib import Path

import click

from neuro_bitnet.cli import console
from neuro_bitnet.config import KV_CACHE_CHOICES, load_settings
from neuro_bitnet.engine.heads import DEFAULT_HEAD, HEADS


@click.command("bench")
@click.option("--model", "-m", default=None, help="Catalog id, alias or path to a .gguf.")
@click.option("--synthetic", type=click.Choice(["2b", "tiny"]), default=None,
              help="Benchmark a random-weight model with the exact shapes of this model (built once, cached).")
@click.option("--prompt-tokens", default=128, show_default=True)
@click.option("--gen-tokens", default=64, show_default=True)
@click.option("--threads", default=None, type=int, help="[default: physical cores]")
@click.option("--repeat", default=3, show_default=True, help="Timed runs (after one warm-up); medians are shown.")
@click.option("--head", type=click.Choice(HEADS), default=DEFAULT_HEAD, show_default=True,
              help="Output layer: 4-bit or int8 copy with the best candidates recomputed exactly, "
                   "or the file's own values only.")
@click.option("--kv-cache", type=click.Choice(KV_CACHE_CHOICES), default=None,
              help="KV cache elements (default: NEURO_BITNET_KV_CACHE, else f16).")
@click.option("--yes", "-y", is_flag=True, help="Download a missing model without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(model, synthetic, prompt_tokens, gen_tokens, threads, repeat, head, kv_cache, yes, as_json) -> None:
    """Measure the engine on a model (default: --synthetic 2b when no model is given)."""
    from neuro_bitnet.engine.bench import run_bench

    if model and synthetic:
        raise click.UsageError("give either --model or --synthetic, not both")
    if prompt_tokens < 1 or gen_tokens < 0 or repeat < 1:
        raise click.UsageError("--prompt-tokens and --repeat must be >= 1, --gen-tokens >= 0")
    settings = load_settings()
    path = _model_path(model, synthetic or ("2b" if model is None else None), settings, yes, as_json)
    result = run_bench(path, threads=threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                       repeat=repeat, head=head, kv_cache=kv_cache)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"neuro bench · {path.name} · {result.threads} threads · {result.isa} · head {head}"
                        f" · KV cache {result.kv_cache}")
    for col in ("prefill tok/s", "decode tok/s", "load s", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row(f"{result.prefill_tokens_per_second:.1f}", f"{result.decode_tokens_per_second:.2f}",
                  f"{result.load_seconds:.2f}", f"{result.peak_rss_mb:.0f}")
    Console().print(table)
    click.echo(f"medians of {repeat} runs: {prompt_tokens} prompt tokens, {gen_tokens} generated "
               f"(samples: prefill {result.prefill_samples}, decode {result.decode_samples})")
    click.echo(f"\nmodel file: {path}")
    for line in next_steps(_catalog_name(model, synthetic, settings)):
        click.echo(line)


def _catalog_name(model: str | None, synthetic: str | None, settings) -> tuple[str, bool]:
    """(the name to pass as --model, whether it is a synthetic model)."""
    if model is None:
        return f"synthetic-{synthetic or '2b'}", True
    from neuro_bitnet.models.manager import ModelManager

    resolved = ModelManager(settings).resolve(model)
    return (model, getattr(resolved, "kind", "") == "synthetic")


def next_steps(name_and_kind: tuple[str, bool]) -> list[str]:
    """What to try after a benchmark: (model name, is it synthetic) -> lines to print."""
    name, synthetic = name_and_kind
    if synthetic:
        return [
            "next:",
            f"  neuro ask \"Hello\" --model {name}    # the same model answering (random weights: noise)",
            f"  neuro chat --model {name}",
            "  neuro model download 2b && neuro ask \"What is BitNet?\"    # the real model (1.2 GB)",
        ]
    return ["next:", f"  neuro ask \"What is BitNet?\" --model {name}", f"  neuro chat --model {name}"]


def _model_path(model: str | None, synthetic: str | None, settings, yes: bool, quiet: bool) -> Path:
    from neuro_bitnet.models.manager import ModelManager

    if synthetic:
        if not quiet:
            click.secho(f"using the synthetic {synthetic} model (random weights, real shapes; "
                        f"--model synthetic-{synthetic} elsewhere)", dim=True, err=True)
        model = f"synthetic-{synthetic}"
    return ModelManager(settings).ensure_model(model, assume_yes=yes, confirm=console.download_question())
