"""CPU time and memory of running processes, read from /proc (Linux only).

CPU comes from /proc/PID/stat: utime + stime of the thread group covers every thread the
process ever had, including threads that have exited (summing live threads, as
/proc/PID/task/*/schedstat does, loses those). cutime + cstime add children the process
has reaped, and live descendants are added from their own stat files, so a server that
forks workers is charged for them too. The unit is the clock tick (10 ms at USER_HZ 100):
rows last seconds, so that is well under 1 % of a row.

Memory is RSS from /proc/PID/status (VmRSS), sampled while the load runs; VmHWM is not
used, since a Python server reaches it during start-up and it never goes down.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Indexes into the fields after "(comm)" in /proc/PID/stat (field 3, state, is index 0).
PPID, UTIME, STIME, CUTIME, CSTIME = 1, 11, 12, 13, 14


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()  # comm may hold spaces and parentheses


def children_of(pid: int) -> list[int]:
    """Live direct children, from every process's parent field."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[PPID]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """CPU seconds used so far by `pid`: all its threads, live or exited, and (with
    `descendants`) its reaped children and live descendants. 0.0 once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    counted = (UTIME, STIME, CUTIME, CSTIME) if descendants else (UTIME, STIME)
    total = sum(int(fields[i]) for i in counted) / CLOCK_TICK
    if descendants:
        total += sum(cpu_seconds(child) for child in children_of(pid))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, all CPUs, from /proc/stat:
    busy is user, nice, system, irq and softirq; steal is time the hypervisor gave away."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq) / CLOCK_TICK, steal / CLOCK_TICK


def rss_kib(pid: int) -> int | None:
    """Resident set size now (VmRSS, KiB), or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None  # a zombie has no VmRSS line


@dataclass
class RssTrack:
    idle: int = 0  # KiB, read when sampling started (before the load)
    peak: int = 0  # KiB, the highest sample
    samples: int = 0


@dataclass
class RssSampler:
    """Samples VmRSS of some processes every `interval` seconds on a thread, from
    `start()` to `stop()`; `tracks[pid]` holds the first reading and the peak."""

    pids: Iterable[int]
    interval: float = 0.05
    tracks: dict[int, RssTrack] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pids = tuple(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        for pid in self.pids:
            idle = rss_kib(pid) or 0
            self.tracks[pid] = RssTrack(idle=idle, peak=idle, samples=1)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # one last reading at the end of the load

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for pid in self.pids:
            value = rss_kib(pid)
            if value is not None:
                track = self.tracks[pid]
                track.peak = max(track.peak, value)
                track.samples += 1


def wait_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches `deadline` (returns at once if past)."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
