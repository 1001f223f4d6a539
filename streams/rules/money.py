"""Money done right: the cost rate effective on a date, and amounts in decimal, half-up.

Rates are effective from `effective_from` to `effective_to` inclusive (open-ended
when `effective_to` is null). Where rates overlap, the one that started last
wins. Amounts are `hours x rate`, rounded half-up to cents; floats never appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")

Record = dict[str, Any]


def rate_on(rates: Iterable[Record], day: str) -> Record | None:
    """The cost rate record effective on `day` (ISO date strings compare as dates)."""
    best: Record | None = None
    for rate in rates:
        start, end = rate["effective_from"], rate.get("effective_to")
        if start <= day and (end is None or day <= end):
            if best is None or start > best["effective_from"]:
                best = rate
            elif start == best["effective_from"] and rate["rate_id"] > best["rate_id"]:
                best = rate  # same start: a stable choice, whatever the arrival order
    return best


def cost_amount(hours: str | Decimal, rate: str | Decimal) -> Decimal:
    """hours x rate, half-up to cents."""
    return (Decimal(hours) * Decimal(rate)).quantize(CENT, rounding=ROUND_HALF_UP)


def money(value: str | Decimal) -> str:
    """A decimal as the contract's JSON form (two places)."""
    return str(Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP))
