"""Server-sent events in the OpenAI streaming format: ``data: {json}`` lines, then ``[DONE]``."""

from __future__ import annotations

import json
from typing import Any

DONE_EVENT = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: dict[str, Any]) -> str:
    """One event carrying ``payload`` as compact JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
