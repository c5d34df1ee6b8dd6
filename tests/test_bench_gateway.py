"""The gateway benchmark's own accounting (benchmarks/), checked rather than trusted.

The harness is run end to end in its quickest mode against the benchmark stand-in
(benchmarks/fast_upstream.py, a stand-in for vLLM) and `mvgen gateway`, on loopback, with
the stand-in spending 1 ms of CPU per completion in a thread that exits: the CPU the
report charges to the stand-in must include those threads. No figure is compared with a
speed target here: timings are the benchmark's to print, not a test's to assert.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gateway_report  # noqa: E402
from procstat import RssSampler, cpu_seconds  # noqa: E402

BURN_MS = 1.0


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_seconds_counts_threads_that_have_exited() -> None:
    before = cpu_seconds(os.getpid())
    thread = threading.Thread(target=burn, args=(0.3,))
    thread.start()
    thread.join()
    assert not thread.is_alive()
    assert cpu_seconds(os.getpid()) - before >= 0.28


def test_rss_sampler_catches_a_peak_that_is_gone_by_the_end() -> None:
    sampler = RssSampler([os.getpid()], interval=0.02).start()
    block = bytearray(64 * 1024 * 1024)  # zero-filled: every page touched
    time.sleep(0.2)
    del block
    sampler.stop()
    track = sampler.tracks[os.getpid()]
    assert track.samples >= 5
    assert track.peak - track.idle >= 48 * 1024  # KiB


def fake_row(path: str, rate: float, shares: dict[str, float]) -> gateway_report.Row:
    workload = gateway_report.Workload("stream", "stream", 64, stream=True)
    return gateway_report.Row(
        workload=workload, path=path, window=2.0, clients=64, sent=10, completed=10,
        latency={"p50": 0.01, "p99": 0.02}, events=int(rate * 2), gaps={"p50": 0.0, "p99": 0.0},
        errors=0, error_sample="", unanswered=0,
        cpu={role: share * 2.0 for role, share in shares.items()}, rss={},
    )  # fmt: skip


def test_a_gateway_faster_than_direct_is_flagged_not_reported_as_a_win() -> None:
    direct = fake_row("direct", 1000, {"stand-in": 0.5, "load generator": 0.3})
    gateway = fake_row("gateway", 1200, {"stand-in": 0.4, "load generator": 0.2, "gateway": 1})
    gateway_report.annotate([direct, gateway], shared_world=True)
    assert any("NOT the ceiling" in note for note in direct.notes)
    assert any(note.startswith("ARTEFACT") for note in gateway.notes)
    assert gateway_report.target_rows([direct, gateway])[0][-1] == "artefact"


def test_a_saturated_direct_row_and_a_slower_gateway_carry_no_warning() -> None:
    direct = fake_row("direct", 1000, {"stand-in": 0.99, "load generator": 0.4})
    gateway = fake_row("gateway", 950, {"stand-in": 0.5, "load generator": 0.2, "gateway": 1})
    gateway_report.annotate([direct, gateway], shared_world=True)
    assert direct.notes == [] and gateway.notes == []
    assert gateway_report.target_rows([direct, gateway])[0][-1] == "yes"


def finite_and_not_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@pytest.mark.timeout(240)
def test_quick_run_reports_sane_figures_and_charges_exited_threads(tmp_path: Path) -> None:
    rows = "chat,stream,paced,big" if shutil.which("h2load") else "stream,paced"
    out = tmp_path / "rows.json"
    argv = [sys.executable, str(BENCH / "bench_gateway.py"), "--quick", "--no-litellm"]
    argv += ["--rows", rows, "--paced", "32", "--time-limit", "200", "--json", str(out)]
    argv += ["--standin-thread-burn-ms", str(BURN_MS)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=230, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "### Targets" in done.stdout and "### CPU" in done.stdout, done.stdout
    report = json.loads(out.read_text())
    families = rows.split(",")
    assert {(r["workload"]["family"], r["path"]) for r in report} == {
        (family, path) for family in families for path in ("direct", "gateway")
    }
    for row in report:
        label = f"{row['name']} {row['path']}"
        assert row["errors"] == 0, (label, row["error_sample"])
        assert row["window"] > 0 and row["rate"] > 0, label
        assert all(finite_and_not_negative(v) for v in row["cpu"].values()), label
        assert row["cpu"]["stand-in"] > 0 and row["cpu"]["load generator"] > 0, label
        for idle, peak in row["rss"].values():
            assert 0 < idle <= peak, label
        for figures in (row["latency"], row["gaps"]):
            assert all(math.isnan(v) or v >= 0 for v in figures.values()), label
        if row["workload"]["stream"]:
            assert row["events"] > 0, label
        if row["path"] == "gateway":
            assert row["cpu"]["gateway"] > 0 and "gateway" in row["rss"], label
        if row["workload"]["family"] == "paced":
            assert finite_and_not_negative(row["gaps"]["p99"]), label
        else:
            # Each request burned BURN_MS in a thread that was gone before the answer;
            # the stand-in's own work is well under a tenth of that per request.
            requests = max(row["sent"], row["completed"])
            assert requests > 0, label
            charged = row["cpu"]["stand-in"] / requests
            assert charged >= 0.5 * BURN_MS / 1000, (label, charged)
