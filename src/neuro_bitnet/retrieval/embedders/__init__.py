"""Text embedders: the `Embedder` protocol, an ONNX Runtime implementation and a name resolver."""

from neuro_bitnet.retrieval.embedders.base import Embedder
from neuro_bitnet.retrieval.embedders.onnx_embedder import OnnxEmbedder
from neuro_bitnet.retrieval.embedders.registry import DEFAULT_EMBEDDER, KNOWN_EMBEDDERS, load_embedder

__all__ = ["DEFAULT_EMBEDDER", "KNOWN_EMBEDDERS", "Embedder", "OnnxEmbedder", "load_embedder"]
