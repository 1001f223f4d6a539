"""Worker processes for the chaos run: fixed slots that are killed and come back.

A slot is one member of the group: its web port, `PSSYNC_INSTANCE_ID` (static
membership) and `PSSYNC_DATA_DIR` stay the same across restarts, so a restarted
worker takes its own partitions back without a rebalance. `Sampler` reads, every
interval, each live worker's resident memory (`/proc/<pid>/status`) and the group's
lag from its committed offsets (what the broker holds, not what a worker reports).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backlog import env_of, free_port
from pssync.avro.contract import CDC_TOPICS
from pssync.settings import Settings

KEYED = ("worker-keyed", "project-keyed")


@dataclass
class Kill:
    """One SIGKILL and what followed it."""

    at_s: float  # since the run's start
    slot: int
    wiped: bool
    ready_s: float = float("nan")  # SIGKILL -> the new process's /ready
    resumed_s: float = float("nan")  # SIGKILL -> the new process's first record consumed


class WorkerSlot:
    """One group member across its restarts."""

    def __init__(self, settings: Settings, index: int, root: Path) -> None:
        self.index = index
        self.settings = settings.model_copy(
            update={
                "web_port": free_port(),
                "web_host": "127.0.0.1",
                "instance_id": f"{settings.app_id}-{index}",
                "data_dir": root / f"state-{index}",
            }
        )
        self.root = root
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # held while this bench kills or stops the process: its exit is then expected
        self.lock = threading.Lock()
        self.deaths: list[tuple[float, int]] = []  # unexpected exits: (time, return code)

    @property
    def log(self) -> Path:
        return self.root / f"worker-{self.index}.log"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}{path}"

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n===== start {self.starts} at {time.time():.3f} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pssync", "worker"],
                env=env_of(self.settings),
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def generations(self) -> set[int]:
        """The group generations this slot's processes joined (from their logs): one per
        rebalance they took part in."""
        found = re.findall(r"Joined group '[^']*' \(generation (\d+)\)", self.log.read_text())
        return {int(g) for g in found}

    def get(self, path: str, timeout_s: float = 3) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=timeout_s) as resp:
            return json.loads(resp.read()) if path != "/metrics" else resp.read().decode()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/ready"), timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.index} exited: see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.index} not ready in {timeout_s}s: {self.log}")
            time.sleep(0.1)

    def records_in(self) -> int:
        """CDC records this process has consumed (per topic in /stats)."""
        try:
            counts = self.get("/stats")["records_in"]
        except (OSError, KeyError, ValueError):
            return 0
        return sum(counts.values()) if isinstance(counts, dict) else int(counts)

    def kill(self, wipe: bool) -> None:
        """SIGKILL, as a crash or an OOM kill would; optionally lose the local state too."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if wipe:
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)

    def crash_and_restart(
        self, kill: Kill, streaming: Callable[[], bool], timeout_s: float = 300
    ) -> Kill:
        """Kill, restart at once, and time the way back: to /ready, and, while the stream
        still offers records (`streaming`), to the new process's first record."""
        killed = time.monotonic()
        with self.lock:
            self.kill(kill.wiped)
            self.start()
        self.wait_ready(timeout_s)
        kill.ready_s = time.monotonic() - killed
        deadline = time.monotonic() + timeout_s
        while self.records_in() == 0 and time.monotonic() < deadline:
            if not streaming():
                return kill  # nothing more to read: no first record to wait for
            time.sleep(0.1)
        kill.resumed_s = time.monotonic() - killed
        return kill

    def revive(self) -> bool:
        """Restart the process if it exited by itself (a crash this bench did not cause);
        the exit is recorded in `deaths`. True if it did."""
        with self.lock:
            if self.proc is None or self.proc.poll() is None:
                return False
            self.deaths.append((time.time(), self.proc.returncode))
            self.start()
            return True

    def stop(self) -> None:
        self.lock.acquire()  # for good: no revival after this
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def memory_kib(self) -> tuple[int, int] | None:
        """(VmRSS, VmHWM) of the live process, in KiB."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        values = {}
        for line in text.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1])
        return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Sample:
    at_s: float
    lag: int | None  # CDC + keyed topics, from the group's committed offsets
    rss_mib: list[float]
    hwm_mib: list[float]


@dataclass
class Sampler:
    """Memory and group lag every `interval_s`, in a thread, until `stop()`."""

    settings: Settings
    slots: list[WorkerSlot]
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        topics = [self.settings.topic(t) for t in CDC_TOPICS]
        topics += [self.settings.internal_topic(t) for t in KEYED]
        # reads the group's committed offsets; never subscribes, so never joins the group
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        try:
            while not self._stop.wait(self.interval_s):
                memory = [m for s in self.slots if (m := s.memory_kib()) is not None]
                self.samples.append(
                    Sample(
                        at_s=time.monotonic() - self.started,
                        lag=group_lag(consumer, topics),
                        rss_mib=[rss / 1024 for rss, _ in memory],
                        hwm_mib=[hwm / 1024 for _, hwm in memory],
                    )
                )
        finally:
            consumer.close()


def group_lag(consumer: Any, topics: list[str]) -> int | None:
    """Records on `topics` past the group's committed offsets; None if the broker is away."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        meta = consumer.list_topics(timeout=2).topics
        tps = [TopicPartition(t, n) for t in topics if t in meta for n in meta[t].partitions]
        lag = 0
        for tp in consumer.committed(tps, timeout=2):
            low, high = consumer.get_watermark_offsets(tp, timeout=2)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    except KafkaException:
        return None
