"""`--parallel N`: how many requests a served model answers at once (`neuro serve`, `neuro mcp`)."""

from __future__ import annotations

import click

from neuro_bitnet.engine.model import MAX_PARALLEL

parallel_option = click.option(
    "--parallel", "-np", type=click.IntRange(1, MAX_PARALLEL), default=None,
    help="Requests answered at once, decoded together in each forward pass (continuous batching); "
         "each has its own --ctx-size positions of KV memory, taken as it fills. Further requests "
         "wait in order. Default: 2 per physical core, at most 4, no more than half the available "
         "memory holds at full context; an explicit N past that is refused.")
