"""Cost rates at their boundaries, and decimal arithmetic half-up to cents."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pssync.streams.rules.money import cost_amount, money, rate_on
from tests.worker_harness import rate

MARCH = rate("R-MAR", start="2026-03-01", end="2026-03-14", amount="80.00")
LATE_MARCH = rate("R-LATE", start="2026-03-20", end=None, amount="92.50")
RATES = [LATE_MARCH, MARCH]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2026-02-28", None),  # before the first rate
        ("2026-03-01", "R-MAR"),  # first day of a rate
        ("2026-03-14", "R-MAR"),  # last day of a rate
        ("2026-03-15", None),  # a gap between rates
        ("2026-03-19", None),
        ("2026-03-20", "R-LATE"),  # first day of an open-ended rate
        ("2031-12-31", "R-LATE"),  # open-ended
    ],
)
def test_rate_effective_on_work_date(day: str, expected: str | None) -> None:
    found = rate_on(RATES, day)
    assert (found["rate_id"] if found else None) == expected


def test_overlapping_rates_take_the_one_that_started_last() -> None:
    overlap = rate("R-MID", start="2026-03-10", end="2026-03-31", amount="85.00")
    found = rate_on([MARCH, overlap], "2026-03-12")
    assert found is not None
    assert found["rate_id"] == "R-MID"


@pytest.mark.parametrize(
    ("hours", "rate_", "amount"),
    [
        ("7.50", "80.00", "600.00"),
        ("0.25", "0.10", "0.03"),  # 0.025 rounds half-up
        ("0.05", "0.10", "0.01"),  # 0.005 rounds half-up
        ("1.15", "33.33", "38.33"),  # 38.3295
        ("8.00", "142.57", "1140.56"),
    ],
)
def test_cost_amount_is_decimal_half_up(hours: str, rate_: str, amount: str) -> None:
    result = cost_amount(hours, rate_)
    assert result == Decimal(amount)
    assert str(result) == amount


def test_money_keeps_two_places() -> None:
    assert money("80") == "80.00"
    assert money(Decimal("0.005")) == "0.01"
