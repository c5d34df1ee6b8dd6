"""The warm-up functions of a rendered app, imported under the real `modal` package, and
the runtime they call (mvgen/runtime/warm_pools.py) run against STAND-INS: a recording
stand-in for a pool class (`Vllm(model=...)` and its `update_autoscaler`), and the
in-memory stand-in for `modal.Dict`. Nothing here reaches Modal."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import modal
import pytest
from conftest import BASE_CONFIG, run_cli
from modal_dict_standin import InMemoryDict
from test_modal_apps import check_gpu_app, import_app, modal_objects, web_endpoints

from mvgen.config import load_plan
from mvgen.runtime.warm_pools import Hold, WarmPools

WARM = """\
warm:
  - {cron: "0 8 * * 1-5", timezone: Europe/Paris, model: gemma-3-12b, gpu: h100, until: "18:00"}
  - {cron: "30 22 * * FRI", model: qwen3-vl-30b, gpu: h100, until: "06:00", min_containers: 3}
  - {cron: "0 9 * * *", timezone: America/New_York, model: gemma-3-12b, gpu: l40s,
     until: "12:00", min_containers: 2}
"""


class StandInPoolClass:
    """Records `Vllm(model=m).update_autoscaler(...)` calls, as (model, kwargs). Not Modal."""

    def __init__(self, name: str, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.name, self.calls = name, calls

    def __call__(self, *, model: str) -> Any:
        pool = self

        class Instance:
            def update_autoscaler(self, **kwargs: Any) -> None:
                pool.calls.append((pool.name, model, kwargs))

        return Instance()


@pytest.fixture
def rendered(write_config, tmp_path):
    config = BASE_CONFIG.replace(
        "max_model_len: 16384\n", "max_model_len: 16384\n    min_containers: 1\n"
    )
    path = write_config(config + WARM)
    out = tmp_path / "out"
    result = run_cli("render", "--config", str(path), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return load_plan(path), out


def test_cron_functions_import_with_their_schedules(rendered) -> None:
    plan, out = rendered
    h100, l40s = plan.app_for("h100"), plan.app_for("l40s")
    for app in (h100, l40s):
        check_gpu_app(plan, app, out / "generated" / app.filename)  # schedules included
    functions, classes = modal_objects(import_app(out / "generated" / h100.filename))
    assert list(functions) == [
        "serve",
        "warm_hold",
        "warm_0_start",
        "warm_0_end",
        "warm_1_start",
        "warm_1_end",
    ]
    assert web_endpoints(functions, classes) == ["serve"]  # no extra web endpoint
    schedules = {name: f.info().schedule for name, f in functions.items()}
    assert schedules["warm_0_start"] == "Cron('0 8 * * 1-5', Europe/Paris)"
    assert schedules["warm_0_end"] == "Cron('0 18 * * 1-5', Europe/Paris)"
    assert schedules["warm_1_start"] == "Cron('30 22 * * FRI', UTC)"
    assert schedules["warm_1_end"] == "Cron('0 6 * * 6', UTC)"  # Saturday morning
    assert functions["warm_hold"].info().max_retries == 3  # reruns end at the same time
    for name in ("warm_0_start", "warm_0_end"):
        info = functions[name].info()
        assert info.gpus == [] and info.timeout == 60 and info.max_retries == 2
    l40s_functions, _ = modal_objects(import_app(out / "generated" / l40s.filename))
    assert l40s_functions["warm_2_start"].info().schedule == "Cron('0 9 * * *', America/New_York)"


def test_cron_functions_set_the_minimum_of_their_models_pool(rendered) -> None:
    """Run each scheduled function's body with the app's pool classes swapped for
    recording stand-ins: the start sets the entry's minimum, the end the model's own."""
    plan, out = rendered
    module = import_app(out / "generated" / plan.app_for("h100").filename)
    names = {id(v): k for k, v in vars(module).items() if isinstance(v, modal.Cls)}
    calls: list[tuple[str, str, dict[str, Any]]] = []
    pools = {m: StandInPoolClass(names[id(c)], calls) for m, c in module.WARM_POOLS.items()}
    module.warm_pools = lambda: WarmPools(module.app.name, pools, InMemoryDict())
    for name in ("warm_0_start", "warm_0_end", "warm_1_start", "warm_1_end"):
        getattr(module, name).local()
    assert calls == [
        ("Vllm", "gemma-3-12b", {"min_containers": 1}),
        ("Vllm", "gemma-3-12b", {"min_containers": 0}),
        ("Vllm2", "qwen3-vl-30b", {"min_containers": 3}),
        ("Vllm2", "qwen3-vl-30b", {"min_containers": 1}),  # its own min_containers
    ]


def test_the_hold_function_takes_what_mvgen_warm_sends(rendered) -> None:
    plan, out = rendered
    path = out / "generated" / plan.app_for("h100").filename
    tree = ast.parse(path.read_text())
    hold = next(n for n in tree.body if getattr(n, "name", None) == "warm_hold")
    assert [a.arg for a in hold.args.args] == [
        "model",
        "min_containers",
        "ends_at",
        "restore",
        "token",
    ]


# --- the runtime, against stand-ins --------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pools(clock: Clock, holds: InMemoryDict | None = None):
    calls: list[tuple[str, str, dict[str, Any]]] = []
    classes = {"m": StandInPoolClass("Vllm", calls), "n": StandInPoolClass("Vllm", calls)}
    store = holds if holds is not None else InMemoryDict()
    return WarmPools("vllm-h100", classes, store, clock=clock.time, sleep=clock.sleep), calls, store


def minimums(calls) -> list[tuple[str, int]]:
    return [(model, kw["min_containers"]) for _, model, kw in calls]


def test_a_hold_raises_sleeps_until_its_end_then_restores() -> None:
    clock = Clock(1000.0)
    warm, calls, store = pools(clock)
    assert warm.hold("m", Hold(2, 1000.0 + 7200, "t1"), restore=0) is True
    assert minimums(calls) == [("m", 2), ("m", 0)]
    assert clock.now == 8200.0 and max(clock.slept) <= 60
    assert store.snapshot() == {}  # the record is gone once the hold ended


def test_a_hold_rerun_after_preemption_keeps_its_original_end() -> None:
    clock = Clock(5000.0)
    warm, calls, _ = pools(clock)
    warm.hold("m", Hold(2, 4000.0, "t1"), restore=1)  # its end has already passed
    assert clock.slept == []
    assert minimums(calls) == [("m", 2), ("m", 1)]


def test_a_newer_hold_replaces_an_older_one() -> None:
    """`mvgen warm --for 2h`, then `--for 4h`: the first to wake must not lower."""
    clock = Clock(0.0)
    warm, calls, holds = pools(clock)

    def sleep(seconds: float) -> None:  # the newer hold is recorded while this one sleeps
        holds.put("vllm-h100/m", Hold(3, 4 * 3600, "newer").to_store())
        clock.now += seconds

    warm.sleep = sleep
    assert warm.hold("m", Hold(2, 2 * 3600, "older"), restore=0) is False
    assert minimums(calls) == [("m", 2)]  # raised, never lowered
    assert holds.snapshot()["vllm-h100/m"]["token"] == "newer"


def test_a_scheduled_end_keeps_a_running_hold() -> None:
    clock = Clock(100.0)
    warm, calls, holds = pools(clock)
    holds.put("vllm-h100/m", Hold(4, 200.0, "t").to_store())
    assert warm.scheduled("m", 0) == 4  # the hold ends later: keep its minimum
    assert warm.scheduled("n", 0) == 0  # another model is not affected
    assert warm.scheduled("m", 6) == 6  # a schedule asking more wins
    clock.now = 300.0
    assert warm.scheduled("m", 0) == 0  # the hold is over
    assert minimums(calls) == [("m", 4), ("n", 0), ("m", 6), ("m", 0)]


def test_a_schedule_runs_when_the_holds_store_is_unreachable() -> None:
    warm, calls, holds = pools(Clock(0.0))
    holds.unreachable = True
    assert warm.scheduled("m", 2) == 2
    assert minimums(calls) == [("m", 2)]


def test_modals_deprecation_warning_is_not_raised_to_the_caller() -> None:
    """modal 1.6.4 warns on every Obj.update_autoscaler call (DeprecationError, a
    UserWarning); the runtime silences that one warning and nothing else."""
    import warnings

    from modal.exception import DeprecationError

    class Warns(StandInPoolClass):
        def __call__(self, *, model: str) -> Any:
            class Instance:
                def update_autoscaler(self, **kwargs: Any) -> None:
                    warnings.warn(
                        "`Function.update_autoscaler()` is deprecated", DeprecationError, 2
                    )

            return Instance()

    warm = WarmPools("a", {"m": Warns("Vllm", [])}, InMemoryDict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warm.set_minimum("m", 1)


def test_generated_block_is_readable(rendered) -> None:
    plan, out = rendered
    text = Path(out / "generated" / plan.app_for("h100").filename).read_text()
    assert "# warm[0]: 1 container of gemma-3-12b up from `0 8 * * 1-5` until 18:00" in text
    assert "# warm[1]: 3 containers of qwen3-vl-30b up from `30 22 * * FRI` until 06:00" in text


def test_a_hold_still_lowers_when_the_holds_store_is_unreachable() -> None:
    """The CLI raised the minimum already: whatever the store does, it must come down."""
    clock = Clock(0.0)
    warm, calls, holds = pools(clock)
    holds.unreachable = True
    assert warm.hold("m", Hold(2, 600.0, "t"), restore=0) is True
    assert minimums(calls) == [("m", 2), ("m", 0)]
