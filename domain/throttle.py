"""The per-tenant request budget: each operation spends its cost from a bucket that refills at a
steady rate (a leaky bucket). Shaped like Shopify's ``throttleStatus`` so partners know it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Throttle:
    allowed: bool
    maximum: int  # the bucket's size, in cost points
    available: float  # points left after this operation (or before it, when it was refused)
    restore_rate: float  # points per second
    retry_after_seconds: float  # 0 when allowed: until enough points are back for this cost


class CostBudget(Protocol):
    @property
    def maximum(self) -> int: ...

    async def spend(self, key: str, cost: int) -> Throttle: ...
