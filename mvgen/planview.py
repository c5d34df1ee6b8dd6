"""`mvgen plan`: what the config would deploy, whether it fits, what it costs, what a render
would change. Like a plan before an apply: it reads and writes nothing but prints.

Costs count GPU time only, at the catalog's list prices (catalog.PRICES_READ_ON); Modal also
bills the containers' CPU and memory, and the gateway, which this leaves out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mvgen.catalog import PRICES_READ_ON
from mvgen.fit import GIB, KV_TOLERANCE_GIB, Fit, assess_deployment, fixes, refusal, weight_label
from mvgen.plan import Deployment, Plan, WarmEntry
from mvgen.render import Change, plan_changes, render_files

HOURS_PER_DAY = 24


# --- cost arithmetic ------------------------------------------------------------------


def hourly_cost(usd_per_gpu_hour: float | None, gpu_count: int) -> float | None:
    """$/hour while one container is up; None when the catalog has no checked price."""
    return None if usd_per_gpu_hour is None else usd_per_gpu_hour * gpu_count


def burst_cost(per_hour: float | None, burst_minutes: float, scaledown_window: int) -> float | None:
    """One burst of use from zero: the container stays up for the scale-down window after it."""
    if per_hour is None:
        return None
    return per_hour * (burst_minutes * 60 + scaledown_window) / 3600


def always_on_cost(per_hour: float | None, min_containers: int) -> float | None:
    """$/day that min_containers cost whether or not anyone sends a request."""
    if per_hour is None:
        return None
    return per_hour * HOURS_PER_DAY * min_containers


@dataclass(frozen=True)
class WarmCost:
    """A `warm:` entry priced over a stretch of its calendar: the containers it adds to
    the model's own min_containers, for the hours its windows cover."""

    entry: WarmEntry
    per_hour: float | None  # one container, as Row.per_hour
    hours: float  # raised-minimum hours in the `days` priced
    days: int

    @property
    def added(self) -> int:
        return self.entry.min_containers - self.entry.static_min

    @property
    def per_period(self) -> float | None:
        return None if self.per_hour is None else self.per_hour * self.added * self.hours

    @property
    def per_day(self) -> float | None:
        total = self.per_period
        return None if total is None else total / self.days


def warm_costs(plan: Plan, first_day: date) -> tuple[WarmCost, ...]:
    from mvgen.warmup import PRICE_DAYS, month_hours

    out = []
    for entry in plan.warm:
        d = next(
            d for d in plan.deployments if (d.gpu.key, d.model.key) == (entry.gpu, entry.model)
        )
        per_hour = hourly_cost(d.gpu.type.usd_per_hour, d.settings.gpu_count)
        out.append(WarmCost(entry, per_hour, month_hours(entry, first_day), PRICE_DAYS))
    return tuple(out)


# Checks whose findings the plan shows as failing rows instead of refusing the config.
REPORTED_CHECKS = ("fit_check", "endpoint_budget")


# --- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    app: str
    deployment: Deployment
    fit: Fit
    per_hour: float | None
    per_burst: float | None
    per_day_always_on: float | None

    @property
    def fit_label(self) -> str:
        return self.fit.status if self.fit.status != "fits" else "ok"


@dataclass(frozen=True)
class Report:
    plan: Plan
    rows: tuple[Row, ...]
    changes: tuple[Change, ...]
    diffs: dict[str, str]
    burst_minutes: float
    warm: tuple[WarmCost, ...] = ()
    warm_from: date | None = None  # first day of the stretch `warm` is priced over

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind != "unchanged")

    @property
    def failures(self) -> list[str]:
        """What would go wrong if this were applied as it stands: each makes the exit code 1.

        Validation (and so `make render`) refuses the first two; the plan shows them with
        the rest of the figures instead.
        """
        plan = self.plan
        out = [
            _misfit(row, plan.image.vllm) for row in self.rows if row.fit.known and not row.fit.fits
        ]
        if plan.endpoints_needed > plan.endpoint_limit:
            out.append(
                f"{plan.mode} mode needs {plan.endpoints_needed} web endpoints but "
                f"endpoint_limit is {plan.endpoint_limit}"
            )
        if self.pending:
            out.append(
                f"generated files are stale: `make render` would change {len(self.pending)} "
                "file(s), so `make check` fails and a deploy would not match the config"
            )
        return out

    def low(self, row: Row) -> bool:
        fit = row.fit
        return fit.fits and fit.kv_cache and fit.sequences < self.plan.fit_min_sequences


def _misfit(row: Row, vllm: str) -> str:
    d = row.deployment
    hint = fixes(d, row.fit, vllm)
    text = f"models.{d.model.key}.per_gpu.{d.gpu.key}: {refusal(d, row.fit, vllm)}"
    return text + (f"; fixes: {'; '.join(hint)}" if hint else "")


def build_report(
    plan: Plan,
    out_dir: Path,
    *,
    burst_minutes: float = 5.0,
    with_diff: bool = False,
    warm_from: date | None = None,
) -> Report:
    rows = []
    for app in plan.apps:
        for d in app.deployments:
            per_hour = hourly_cost(d.gpu.type.usd_per_hour, d.settings.gpu_count)
            rows.append(
                Row(
                    app=app.name,
                    deployment=d,
                    fit=assess_deployment(d, plan.image.vllm),
                    per_hour=per_hour,
                    per_burst=burst_cost(per_hour, burst_minutes, d.settings.scaledown_window),
                    per_day_always_on=always_on_cost(per_hour, d.settings.min_containers),
                )
            )
    files = render_files(plan)
    changes = plan_changes(files, out_dir)
    diffs = unified_diffs(files, changes, out_dir) if with_diff else {}
    warm_from = warm_from or datetime.now(UTC).date()
    warm = warm_costs(plan, warm_from)
    return Report(plan, tuple(rows), tuple(changes), diffs, burst_minutes, warm, warm_from)


def unified_diffs(files: dict[str, str], changes: list[Change], out_dir: Path) -> dict[str, str]:
    """What `make render` would do to each file, as `diff -u` shows it."""
    out = {}
    for change in changes:
        if change.kind in ("unchanged", "kept"):  # render leaves both as they are
            continue
        target = out_dir / change.path
        old = target.read_text(encoding="utf-8") if target.exists() else ""
        new = files.get(change.path, "")
        lines = difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{change.path}" if change.kind != "added" else "/dev/null",
            tofile=f"b/{change.path}" if change.kind != "removed" else "/dev/null",
        )
        out[change.path] = "".join(lines)
    return out


# --- output ---------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    plan = report.plan
    apps: dict[str, dict[str, Any]] = {}
    for app in plan.apps:
        apps[app.name] = {"name": app.name, "gpu": app.gpu.type.name, "url": app.url, "models": []}
    for row in report.rows:
        apps[row.app]["models"].append(_row_json(report, row))
    return {
        "config": plan.source,
        "mode": plan.mode,
        "prices_read_on": PRICES_READ_ON,
        "burst_minutes": report.burst_minutes,
        "fit_min_sequences": plan.fit_min_sequences,
        "apps": list(apps.values()),
        "endpoints": {"used": plan.endpoints_needed, "limit": plan.endpoint_limit},
        "warm": _warm_json(report),
        "changes": [_change_json(report, c) for c in report.pending],
        "warnings": list(plan.warnings),
        "failures": report.failures,
        "ok": not report.failures,
    }


def _warm_json(report: Report) -> dict[str, Any]:
    from mvgen.warmup import PRICE_DAYS

    schedules = []
    for cost in report.warm:
        e = cost.entry
        schedules.append(
            {
                "entry": e.path,
                "app": e.app,
                "model": e.model,
                "gpu": e.gpu,
                "cron": e.cron,
                "timezone": e.timezone,
                "until": e.until,
                "end_cron": e.end_cron,
                "min_containers": e.min_containers,
                "added_containers": cost.added,
                "usd_per_hour": _usd(cost.per_hour),
                "hours": round(cost.hours, 2),
                "usd_per_day": _usd(cost.per_day),
                "usd_per_month": _usd(cost.per_period),
            }
        )
    first = report.warm_from.isoformat() if report.warm_from else None
    return {"from": first, "days": PRICE_DAYS, "schedules": schedules}


def _change_json(report: Report, change: Change) -> dict[str, str]:
    out = {"path": change.path, "kind": change.kind}
    if change.path in report.diffs:
        out["diff"] = report.diffs[change.path]
    return out


def _row_json(report: Report, row: Row) -> dict[str, Any]:
    d, fit = row.deployment, row.fit
    known = fit.known
    kv = known and fit.kv_cache  # encoder-only pooling models have no KV figures
    return {
        "model": d.model.key,
        "kind": d.model.kind,
        "route": d.route,
        "gpu": d.gpu_spec,
        "checkpoint": d.checkpoint.hf_id,
        "max_model_len": d.settings.max_model_len,
        "quantization": d.settings.quantization,
        "weights": weight_label(d),
        "fit": {
            "status": fit.status,
            "reason": fit.reason,
            "below_min_sequences": report.low(row),
            "torch_visible_gib": _gib(fit.visible_bytes) if known else None,
            "usable_gib": _gib(fit.usable_bytes) if known else None,
            "weights_gib": _gib(fit.weight_bytes) if known else None,
            "load_peak_gib": _gib(fit.load_peak_bytes) if known else None,
            "profile_gib": _gib(fit.profile_bytes) if known else None,
            "sampler_gib": _gib(fit.sampler_bytes) if known else None,
            "encoder_gib": _gib(fit.encoder_bytes) if known else None,
            "non_torch_gib": _gib(fit.non_torch_bytes) if known else None,
            "overhead_gib": _gib(fit.overhead_bytes) if known else None,
            "kv_cache": fit.kv_cache if known else None,
            "headroom_gib": _gib(fit.kv_budget_bytes) if known and not kv else None,
            "kv_budget_gib": _gib(fit.kv_budget_bytes) if kv else None,
            "kv_budget_range_gib": (
                [
                    _gib(fit.kv_budget_bytes - fit.below_bytes),
                    _gib(fit.kv_budget_bytes + fit.above_bytes),
                ]
                if kv
                else None
            ),
            "kv_bytes_per_token": fit.kv_bytes_per_token if kv else None,
            "kv_per_sequence_gib": _gib(fit.sequence_bytes) if kv else None,
            "sequences": round(fit.sequences, 2) if kv else None,
            "sequences_range": (
                [round(fit.sequences_low, 2), round(fit.sequences_high, 2)] if kv else None
            ),
            "max_num_seqs": fit.max_num_seqs if known else None,
            "max_num_batched_tokens": fit.batched_tokens if known else None,
            "longest_max_model_len": fit.longest_len,
            "lora_gib": _gib(fit.lora_bytes) if known else None,
        },
        "adapters": _adapters_json(d),
        "cost": {
            "usd_per_hour": _usd(row.per_hour),
            "usd_per_burst": _usd(row.per_burst),
            "scaledown_window_s": d.settings.scaledown_window,
            "min_containers": d.settings.min_containers,
            "usd_per_day_always_on": _usd(row.per_day_always_on),
        },
    }


def _adapters_json(d: Deployment) -> dict[str, Any] | None:
    """The LoRA adapters this GPU loads and what vLLM reserves for them."""
    if not d.adapters:
        return None
    return {
        "names": [a.name for a in d.adapters],
        "ranks": [a.rank for a in d.adapters],
        "max_lora_rank": d.max_lora_rank,
        "max_loras": d.max_loras,
    }


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def _usd(n: float | None) -> float | None:
    return None if n is None else round(n, 2)


def print_report(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 180)  # a pipe or a test: don't fold the table
    plan = report.plan
    table = Table(title=f"mvgen plan: {plan.source}, {plan.mode} mode")
    for name, justify in COLUMNS:
        table.add_column(name, justify=justify, overflow="fold", no_wrap=justify == "right")
    for i, row in enumerate(report.rows):
        last_of_app = i + 1 == len(report.rows) or report.rows[i + 1].app != row.app
        table.add_row(*_cells(report, row), end_section=last_of_app)
    console.print(table)
    console.print(
        f"KV budget: per GPU, and how far it may be off: {KV_TOLERANCE_GIB:g} GiB, the fit's "
        "tolerance against published vLLM start-up logs, and more above where an image-encoder "
        "estimate sets the start-up peak (docs/plan.md). seqs: full-length sequences the KV "
        f"cache holds at once, and their range over that span ({plan.fit_min_sequences}+ wanted: "
        f"fit.min_sequences). LoRA: adapter slots (max_loras) x max_lora_rank and the "
        "GPU memory vLLM reserves for them, part of weights. $/h: Modal GPU list prices read "
        f"{PRICES_READ_ON}, GPU "
        f"time only. $/burst: {report.burst_minutes:g} min of use from zero plus the "
        "scaledown_window idle. $/day on: min_containers kept up all day."
    )
    if any(row.deployment.model.pooling for row in report.rows):
        console.print(
            "(embed), (rerank): pooling models, profiled without a sampler; an encoder-only "
            "one (BERT, XLM-R) has no KV cache, which vLLM then does not allocate: its KV "
            "budget column shows the memory left beside the weights and one step's "
            "activations."
        )
    for row in report.rows:
        if not row.fit.known:
            d = row.deployment
            console.print(
                f"fit unknown: {d.model.key} on {d.gpu_spec}: {row.fit.reason}",
                markup=False,
                soft_wrap=True,
            )
    if report.warm:
        console.print(_warm_table(report))
    console.print(f"web endpoints: {plan.endpoints_needed} of {plan.endpoint_limit}")
    if report.pending:
        console.print(f"make render would change {len(report.pending)} file(s):")
        for change in report.pending:
            console.print(f"  {change.kind:>8}  {change.path}", markup=False)
    else:
        console.print("make render would change nothing")
    for text in report.diffs.values():
        console.out(text, end="", highlight=False)
    for failure in report.failures:
        console.print(f"would fail: {failure}", markup=False, soft_wrap=True)


COLUMNS = (
    ("app", "left"),
    ("model", "left"),
    ("gpu", "left"),
    ("dtype", "left"),
    ("max len", "right"),
    ("weights", "right"),
    ("LoRA", "right"),
    ("KV budget", "right"),
    ("KV/seq", "right"),
    ("seqs", "right"),
    ("fit", "left"),
    ("$/h", "right"),
    ("$/burst", "right"),
    ("$/day on", "right"),
)


def _cells(report: Report, row: Row) -> tuple[str, ...]:
    d, fit = row.deployment, row.fit
    known = fit.known
    label = "low" if report.low(row) else row.fit_label
    kv = known and fit.kv_cache
    model = d.model.key + (f" ({d.model.kind})" if d.model.pooling else "")
    seqs = f"{fit.sequences:.1f} ({fit.sequences_low:.1f}-{fit.sequences_high:.1f})"
    return (
        row.app,
        model,
        d.gpu_spec,
        weight_label(d),
        str(d.settings.max_model_len),
        f"{fit.weight_bytes / GIB:.1f} GiB" if known else "?",
        _lora(d, fit),
        _budget(fit) if kv else _headroom(fit) if known else "?",
        f"{fit.sequence_bytes / GIB:.2f} GiB" if kv else "-" if known else "?",
        seqs if kv else "-" if known else "?",
        label,
        _money(row.per_hour),
        _money(row.per_burst),
        _money(row.per_day_always_on),
    )


def _lora(d: Deployment, fit: Fit) -> str:
    """The adapters' buffers (part of weights): `2 x r64: 0.60 GiB`, or - without any."""
    if not d.adapters:
        return "-"
    size = f"{fit.lora_bytes / GIB:.2f} GiB" if fit.known else "?"
    return f"{d.max_loras} x r{d.max_lora_rank}: {size}"


def _budget(fit: Fit) -> str:
    """The KV budget and how far the published logs say it may be off, e.g. 17.3 -0.5/+0.5."""
    return (
        f"{fit.kv_budget_bytes / GIB:.1f} GiB "
        f"-{fit.below_bytes / GIB:.1f}/+{fit.above_bytes / GIB:.1f}"
    )


def _headroom(fit: Fit) -> str:
    """An encoder-only model's column: no KV cache, and what is left beside it."""
    return f"none ({fit.kv_budget_bytes / GIB:.1f} GiB free)"


def _money(n: float | None) -> str:
    return "?" if n is None else f"{n:.2f}"


WARM_COLUMNS = (
    ("entry", "left"),
    ("app", "left"),
    ("model", "left"),
    ("starts (cron, zone)", "left"),
    ("until", "left"),
    ("+containers", "right"),
    ("hours", "right"),
    ("$/day", "right"),
    ("$/month", "right"),
)


def _warm_table(report: Report) -> Any:
    from rich.table import Table

    first = report.warm[0]
    title = f"warm-up schedules over the {first.days} days from {report.warm_from}"
    table = Table(title=title, caption=_WARM_CAPTION)
    for name, justify in WARM_COLUMNS:
        table.add_column(name, justify=justify, overflow="fold")
    for cost in report.warm:
        e = cost.entry
        table.add_row(
            e.path,
            e.app,
            e.model,
            f"{e.cron} ({e.timezone})",
            e.until,
            f"{cost.added} (to {e.min_containers})",
            f"{cost.hours:.1f}",
            _money(cost.per_day),
            _money(cost.per_period),
        )
    return table


_WARM_CAPTION = (
    "GPU $/h x gpu_count x containers added above min_containers x hours of the windows "
    "in those days; $/month is that total, $/day its daily average."
)
