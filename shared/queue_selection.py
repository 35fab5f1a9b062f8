"""Which queues a worker serves, and in what order it claims from them (`WORKER_QUEUES`).

Three forms (SPEC section 9), as Sidekiq and asynq read them:

- `*`: every queue there is, new ones included, in a fresh random order at each claim, so
  no queue is starved and none is favoured;
- `critical,default,low`: strict order: a later queue runs only while the earlier ones have
  nothing ready;
- `critical:6,default:3,low:1`: weights: each claim starts with a queue drawn with
  probability proportional to its weight, so while all have work each gets that share of
  the claims, and a queue with nothing ready gives its turn to the next.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shared.models import QUEUE_NAME_PATTERN

_NAME = re.compile(QUEUE_NAME_PATTERN)
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class QueueSelection:
    """A parsed `WORKER_QUEUES`."""

    mode: Literal["all", "strict", "weighted"]
    queues: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> QueueSelection:
        """Read `*`, `a,b,c` or `a:3,b:1`; ValueError says what is wrong."""
        text = raw.strip()
        if text in ("", "*"):
            return cls("all")
        names: list[str] = []
        weights: list[int] = []
        for part in (piece.strip() for piece in text.split(",")):
            name, sep, weight = part.partition(":")
            name = name.strip()
            if not _NAME.match(name):
                raise ValueError(
                    f"WORKER_QUEUES: {name!r} is not a queue name (lower-case letters, digits, "
                    "'_' and '-', up to 64, starting with a letter or digit)"
                )
            if name in names:
                raise ValueError(f"WORKER_QUEUES names {name!r} twice")
            names.append(name)
            if sep:
                if not weight.strip().isdigit() or not 1 <= int(weight) <= MAX_WEIGHT:
                    raise ValueError(
                        f"WORKER_QUEUES: the weight of {name!r} must be 1..{MAX_WEIGHT}, "
                        f"not {weight!r}"
                    )
                weights.append(int(weight))
        if weights and len(weights) != len(names):
            raise ValueError("WORKER_QUEUES: give every queue a weight, or none (strict order)")
        if weights:
            return cls("weighted", tuple(names), tuple(weights))
        return cls("strict", tuple(names))

    def served(self, known: Sequence[str]) -> list[str]:
        """The queues served, given the queues that exist (`*` serves them all)."""
        return list(known) if self.mode == "all" else list(self.queues)

    def order(self, known: Sequence[str], rng: random.Random | None = None) -> list[str]:
        """The order of one claim round."""
        draw = rng or random
        if self.mode == "strict":
            return list(self.queues)
        if self.mode == "all":
            queues = list(known)
            draw.shuffle(queues)
            return queues
        # Weighted random order without replacement (Efraimidis-Spirakis): the first queue
        # is drawn with probability weight / total, the next among the rest, and so on.
        keyed = [
            (draw.random() ** (1.0 / weight), name)
            for name, weight in zip(self.queues, self.weights, strict=True)
        ]
        return [name for _, name in sorted(keyed, reverse=True)]

    def describe(self) -> str:
        if self.mode == "all":
            return "every queue"
        if self.mode == "strict":
            return "strict order " + " > ".join(self.queues)
        pairs = zip(self.queues, self.weights, strict=True)
        return "weights " + ", ".join(f"{name}:{weight}" for name, weight in pairs)
