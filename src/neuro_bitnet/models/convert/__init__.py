"""Convert Hugging Face BitNet checkpoints (safetensors) into GGUF files the engine runs.

    from neuro_bitnet.models.convert import convert_checkpoint
    convert_checkpoint("bitnet_b1_58-large/", "large.gguf")

See docs/convert.md for the supported layouts and the output format.
"""

from neuro_bitnet.models.convert.errors import ConvertError
from neuro_bitnet.models.convert.layouts import GGUF_ARCHES, Layout, detect_layout
from neuro_bitnet.models.convert.writer import ConvertResult, convert_checkpoint

__all__ = [
    "ConvertError",
    "ConvertResult",
    "GGUF_ARCHES",
    "Layout",
    "convert_checkpoint",
    "detect_layout",
]
