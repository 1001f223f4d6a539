"""State that stays flat as the firm grows: counted, not timed (the timed table is
`python -m bench.state_flatness`)."""

from __future__ import annotations

from pathlib import Path

from bench.state_flatness import measure


def test_work_per_dependent_and_changelog_per_change_do_not_grow(tmp_path: Path) -> None:
    rows = [measure(n, tmp_path / str(n)) for n in (100, 200, 400, 800)]
    per_change = [r["bytes_per_change"] for r in rows]
    assert max(per_change) / min(per_change) < 1.05, per_change
    for reference in ("erp project", "period", "worker"):
        # one read per dependent (its own state), and nothing written for the ones that
        # did not change: the reference's own keys only, whatever the number of dependents
        reads = [r[reference]["reads"] for r in rows]
        assert all(1.0 <= x < 1.2 for x in reads), (reference, reads)
        records = [r[reference]["records"] * r["n"] for r in rows]
        assert max(records) == min(records), (reference, records)
