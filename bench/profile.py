"""Where a worker's time goes: `python -m bench.profile [--workload medium]`.

Produces the workload (as `bench.speed` does), runs one fresh worker on the backlog
under `py-spy record --gil` (samples only while a thread holds the interpreter, so
waiting on Kafka or RocksDB in C does not count), and prints each part's share of the
samples, each sample counted in the innermost part it is in. The README's table of
shares comes from here; the raw stacks are kept with `--keep`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import speed

# (part, frames that mark it); the innermost match in a stack wins
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("the rules and their state", ("KeyedFlow._apply", "KeyedFlow._fire")),
    ("the alignment buffer's release bookkeeping", ("KeyedFlow._release", "KeyedFlow.process")),
    ("decoding CDC records", ("Decoder.decode",)),
    ("internal messages: route, send", ("IngestSpec.send", "send_watermarks")),
    ("outputs: JSON form to Avro, produce", ("Emitter.send",)),
    ("commit: changelogs produced, RocksDB writes", ("Emitter.commit",)),
    ("internal messages: parse", ("from_bytes",)),
    (
        "Faust and aiokafka, per record",
        (
            "Fetcher._fetcher",
            "Stream._c_aiter",
            "batches (",
            "Stream.take_events",
            "_passive_drainer",
        ),
    ),
    ("source probe and timers", ("Runtime.probe", "report_sources", "ticks (", "sources (")),
]
IDLE = re.compile(r"\bselect\b|epoll|\bwait\b \(threading|_worker \(concurrent|sleep")


def shares(raw: Path) -> list[tuple[str, float]]:
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not n.isdigit() or IDLE.search(frames[-1]):
            continue
        total += int(n)
        part, depth = "the event loop and Faust's other services", -1
        for name, marks in PARTS:
            for i, frame in enumerate(frames):
                if i > depth and any(m in frame for m in marks):
                    part, depth = name, i
        counts[part] += int(n)
    return [(part, n / total) for part, n in counts.most_common()] if total else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--workload", choices=sorted(speed.WORKLOADS), default="medium")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the raw stacks, logs and state here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pssync-profile-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        workload, truth = speed.produce_workload(root, speed.WORKLOADS[args.workload], args.seed)
        raw = root / "stacks.txt"
        run = speed.run_pssync(workload, root, truth, 1, raw)
        print(f"{args.workload}: {run['seconds']:.1f}s, truth ok={run['truth_ok']}")
        print("| part | share |\n|---|---|")
        for part, share in shares(raw):
            print(f"| {part} | {share:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
