"""A multi-turn conversation that keeps within the model's context by dropping old turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

PER_MESSAGE_OVERHEAD = 8  # role labels and end-of-turn tokens, when only content can be counted


@dataclass
class Conversation:
    """System prompt plus alternating user/assistant turns."""

    system: str
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, pending_user: str | None = None) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] + list(self.turns)
        if pending_user is not None:
            msgs.append({"role": "user", "content": pending_user})
        return msgs

    def add_exchange(self, user: str, assistant: str) -> None:
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]

    def reset(self) -> None:
        self.turns.clear()

    def fit(self, user: str, budget: int, count: Callable[[list[dict[str, str]]], int]) -> int:
        """Drop the oldest exchanges until the prompt for ``user`` fits ``budget`` tokens.

        Returns how many exchanges were dropped. The system prompt and the new question stay.
        """
        dropped = 0
        while self.turns and count(self.messages(user)) > budget:
            del self.turns[:2]
            dropped += 1
        return dropped


def approximate_counter(count_tokens: Callable[[str], int]) -> Callable[[list[dict[str, str]]], int]:
    """Prompt size from content token counts plus a fixed overhead per message."""

    def count(messages: list[dict[str, str]]) -> int:
        return sum(count_tokens(m["content"]) + PER_MESSAGE_OVERHEAD for m in messages)

    return count
