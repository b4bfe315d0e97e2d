"""The neuro daemon: an OpenAI-compatible HTTP server over one loaded model, and its client."""

from neuro_bitnet.server.client import DaemonClient, chat_stream, complete_stream, is_running
from neuro_bitnet.server.config import ServerConfig
from neuro_bitnet.server.errors import DaemonError

__all__ = ["DaemonClient", "DaemonError", "ServerConfig", "chat_stream", "complete_stream", "is_running"]
