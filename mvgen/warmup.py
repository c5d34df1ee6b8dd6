"""Scheduled warm-up: `warm:` entries checked and resolved, and the windows they make.

A window runs from a start of the entry's cron schedule until the next `until` time of
day, both in the entry's time zone. Each entry starts once a day at one time, so its own
windows never overlap, and its end is a cron schedule too: the same days at `until`, or
the next days when the window runs past midnight. Modal runs both in the GPU's app
(templates/gpu_app.py.j2), following the zone's daylight saving time. Validation,
`mvgen plan`'s prices and `mvgen warm` all use the windows computed here (cronsim
iterates the schedule; zoneinfo, with the tzdata package as its fallback, the zone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

from mvgen.errors import Problem, did_you_mean
from mvgen.loader import Lines
from mvgen.plan import Plan, WarmEntry

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# One term of a field in the syntax every crontab takes (https://crontab.guru/): `*`, a
# number or a three-letter name, a range, a step. Extensions (L, W, #, ?, @daily) are
# refused: modal.Cron passes the string on unchecked and the server may not take them.
_TERM = re.compile(r"^(\*|[0-9]+|[A-Za-z]{3})(-([0-9]+|[A-Za-z]{3}))?(/[0-9]+)?$")
# The function `mvgen warm` spawns to lower a minimum later runs at most Modal's longest
# timeout, 24 h (https://modal.com/docs/guide/timeouts); holds stop an hour short of it.
HOLD_FUNCTION = "warm_hold"
HOLD_TIMEOUT = 24 * 3600
MAX_HOLD = timedelta(hours=23)
SCHEDULED_TIMEOUT = 60  # a scheduled start or end makes one autoscaler call
OVERLAP_DAYS = 366  # how far ahead two entries of one pool are compared
PRICE_DAYS = 30  # `mvgen plan` prices a month as the 30 days from its start date


class WarmError(ValueError):
    """A `warm:` field that cannot work: the message, and how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Window:
    """One raised minimum, in UTC."""

    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


# --- one entry -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cron:
    """A checked cron expression: its five fields and its one start time of day."""

    fields: tuple[str, ...]
    start: time
    weekdays: frozenset[int]  # 0 = Sunday


_ORDER = "the fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-7)"


def parse_cron(text: str) -> Cron:
    from cronsim import CronSim, CronSimError

    fields = tuple(text.split())
    if len(fields) != 5:
        hint = "minute hour day-of-month month day-of-week, e.g. '0 8 * * 1-5'"
        if text.strip().startswith("@"):
            hint = "write the five fields instead, e.g. '0 8 * * *' for every day at 08:00"
        elif len(fields) == 6:
            hint = "seconds are not supported: drop the first field"
        raise WarmError(f"{text!r} has {len(fields)} fields; cron needs 5", hint)
    for name, field in zip(FIELDS, fields, strict=True):
        if not all(_TERM.match(term) for term in field.split(",")):
            raise WarmError(
                f"the {name} field {field!r} is not standard cron syntax",
                "use numbers, JAN-DEC or SUN-SAT names, *, commas, ranges (1-5) and "
                "steps (*/2); L, W, # and ? are not taken",
            )
    try:
        sim = CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise WarmError(f"{text!r} is not a valid cron expression: {exc}", _ORDER) from None
    starts = [time(h, m) for h in sorted(sim.hours) for m in sorted(sim.minutes)]
    if len(starts) != 1:
        shown = ", ".join(t.strftime("%H:%M") for t in starts[:3])
        more = ", ..." if len(starts) > 3 else ""
        hint = "write one entry per start time"
        if fields[0].startswith("*"):
            hint = f"did you mean {' '.join(('0', *fields[1:]))!r}?"
        raise WarmError(
            f"{text!r} starts at {len(starts)} times a day ({shown}{more}); an entry "
            "starts once a day and holds until its `until`",
            hint,
        )
    weekdays = frozenset(d % 7 for d in sim.weekdays if isinstance(d, int))
    return Cron(fields, starts[0], weekdays)


def parse_until(text: str) -> time:
    hour, minute = text.split(":")  # the schema's pattern guarantees HH:MM
    return time(int(hour), int(minute))


def end_cron(cron: Cron, until: time) -> str:
    """The cron schedule of the windows' ends: `until` on each day a window ends."""
    minute, hour, dom, month, dow = cron.fields
    start = cron.start.strftime("%H:%M")
    if until == cron.start:
        raise WarmError(
            f"until is the start time, {start}",
            "until is a time of day; a window lasts from the start to the next until",
        )
    if until > cron.start:
        return f"{until.minute} {until.hour} {dom} {month} {dow}"
    if dom != "*" or month != "*":
        raise WarmError(
            f"the window from {start} to {until:%H:%M} ends the next day, which a "
            f"schedule by day-of-month {dom!r} and month {month!r} cannot name as a cron",
            "use * for day-of-month and month, choosing days with day-of-week, or an "
            "until later in the day than the start",
        )
    return f"{until.minute} {until.hour} * * {_next_days(dow, cron.weekdays)}"


def _next_days(dow: str, weekdays: frozenset[int]) -> str:
    if dow == "*":
        return "*"
    return ",".join(str(d) for d in sorted((d + 1) % 7 for d in weekdays))


@cache
def time_zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def check_zone(name: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
        known = name in time_zones()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        known = False
    if not known:
        # "Paris" means Europe/Paris: compare with the cities too
        cities = {zone.rsplit("/", 1)[-1]: zone for zone in sorted(time_zones())}
        city = did_you_mean(name.replace(" ", "_"), cities)
        near = cities[city] if city else did_you_mean(name, time_zones())
        raise WarmError(
            f"unknown time zone {name!r}",
            f"did you mean {near!r}?" if near else "use an IANA name such as Europe/Paris or UTC",
        )


# --- windows ---------------------------------------------------------------------------


def windows(entry: WarmEntry, start: datetime, end: datetime) -> list[Window]:
    """Every window of `entry` that overlaps [start, end), in order, in UTC."""
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    zone = ZoneInfo(entry.timezone)
    until = parse_until(entry.until)
    out = []
    # From a day earlier, so a window already running at `start` is found too.
    for began in CronSim(entry.cron, (start - timedelta(days=1)).astimezone(zone)):
        if began >= end:
            break
        day = began.date() if until > began.time() else began.date() + timedelta(days=1)
        ended = datetime.combine(day, until, tzinfo=zone)
        if ended > start:
            out.append(Window(began.astimezone(UTC), ended.astimezone(UTC)))
    return out


def active(entry: WarmEntry, at: datetime) -> Window | None:
    """The window of `entry` under way at `at`, if any."""
    found = windows(entry, at, at + timedelta(seconds=1))
    return next((w for w in found if w.start <= at < w.end), None)


def scheduled_minimum(plan: Plan, gpu: str, model: str, static: int, at: datetime) -> int:
    """The minimum the schedule holds for `model` on `gpu` at `at`: `static` outside
    every window."""
    held = [
        e.min_containers
        for e in plan.warm
        if (e.gpu, e.model) == (gpu, model) and active(e, at) is not None
    ]
    return max([static, *held])


def month_hours(entry: WarmEntry, first_day: date, days: int = PRICE_DAYS) -> float:
    """Hours of raised minimum in the `days` days from midnight of `first_day` in the
    entry's zone: a real stretch of its calendar, daylight saving time included."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(entry.timezone)
    start = datetime.combine(first_day, time(), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=days), time(), tzinfo=zone)
    end = end.astimezone(UTC)
    total = sum(
        (min(w.end, end) - max(w.start, start)).total_seconds() for w in windows(entry, start, end)
    )
    return total / 3600


def now_utc() -> datetime:
    return datetime.now(UTC)


def deploy_notes(plan: Plan, app_names: Iterable[str], now: datetime) -> list[str]:
    """A deploy resets every minimum the schedule raised: say so for each window under way
    in the apps about to be deployed, with the command that restores it."""
    names = set(app_names)
    notes = []
    for entry in (e for e in plan.warm if e.app in names):
        window = active(entry, now)
        if window is None:
            continue
        left = min(window.end - now, MAX_HOLD)
        minutes = -(-left // timedelta(minutes=1))  # rounded up
        hours, rest = divmod(minutes, 60)
        left = f"{hours}h{rest}m" if hours and rest else f"{hours}h" if hours else f"{rest}m"
        notes.append(
            f"{entry.path} is under way until {entry.until} ({entry.timezone}): this deploy "
            f"resets {entry.model} on {entry.gpu} to {entry.static_min} container(s) until "
            f"its next start; `mvgen warm --gpu {entry.gpu} --model {entry.model} --for "
            f"{left} --min {entry.min_containers}` afterwards restores it"
        )
    return notes


# --- the warm: section -----------------------------------------------------------------


def warm_entries(
    raw: Sequence[dict[str, Any]],
    plan: Plan,
    gpu_keys: Iterable[str],
    lines: Lines,
    now: datetime | None = None,
) -> tuple[tuple[WarmEntry, ...], list[Problem]]:
    """Resolve `warm:` against the Plan; every problem found, each with its path."""
    if not raw:
        return (), []
    if plan.mode != "gpu":
        return (), [
            Problem(
                "warm",
                "scheduled warm-up needs mode: gpu (a legacy app's one function is its "
                "web endpoint, whose minimum mvgen does not change)",
                lines.get(("warm",)),
                "use mode: gpu, or remove warm:, or set min_containers on the model",
            )
        ]
    problems: list[Problem] = []
    entries = []
    for index, spec in enumerate(raw):
        entry = _entry(index, spec, plan, list(gpu_keys), lines, problems)
        if entry is not None:
            entries.append(entry)
    problems += overlaps(entries, now or datetime.now(UTC), lines)
    return tuple(entries), problems


def _entry(
    index: int,
    spec: dict[str, Any],
    plan: Plan,
    gpu_keys: list[str],
    lines: Lines,
    problems: list[Problem],
) -> WarmEntry | None:
    found: list[Problem] = []

    def problem(key: str, message: str, hint: str | None = None) -> None:
        path = ("warm", index, key)
        found.append(Problem(f"warm[{index}].{key}", message, lines.get(path), hint))

    gpu, model = spec["gpu"], spec["model"]
    models = [m.key for m in plan.models]
    deployment = None
    if gpu not in gpu_keys:
        near = did_you_mean(gpu, gpu_keys)
        problem(
            "gpu",
            f"unknown GPU {gpu!r}; gpus: defines {', '.join(gpu_keys)}",
            f"did you mean {near!r}?" if near else None,
        )
    if model not in models:
        near = did_you_mean(model, models)
        problem(
            "model",
            f"unknown model {model!r}; models: defines {', '.join(models)}",
            f"did you mean {near!r}?" if near else None,
        )
    elif gpu in gpu_keys:
        deployment = next(
            (d for d in plan.deployments if (d.gpu.key, d.model.key) == (gpu, model)), None
        )
        if deployment is None:
            served = sorted(d.gpu.key for d in plan.deployments if d.model.key == model)
            problem(
                "gpu",
                f"{model} is not served on {gpu}; its GPUs: {', '.join(served) or '(none)'}",
                f"add {gpu!r} to models.{model}.gpus, or warm one of its GPUs",
            )
    zone = spec.get("timezone", "UTC")
    try:
        check_zone(zone)
    except WarmError as exc:
        problem("timezone", str(exc), exc.hint)
    until = parse_until(spec["until"])
    end = None
    try:
        cron = parse_cron(spec["cron"])
        try:
            end = end_cron(cron, until)
        except WarmError as exc:
            problem("until", str(exc), exc.hint)
    except WarmError as exc:
        problem("cron", str(exc), exc.hint)
    minimum = spec.get("min_containers", 1)
    if deployment is not None and minimum <= deployment.settings.min_containers:
        problem(
            "min_containers",
            f"{minimum} is not above the {deployment.settings.min_containers} container(s) "
            f"{model} keeps up on {gpu} anyway (min_containers), so this entry changes nothing",
            f"set it above {deployment.settings.min_containers}",
        )
    problems += found
    if found or deployment is None or end is None:
        return None
    app = plan.app_for(gpu)
    assert app is not None  # the deployment exists, so its GPU's app does
    return WarmEntry(
        index=index,
        cron=" ".join(cron.fields),
        timezone=zone,
        model=model,
        gpu=gpu,
        min_containers=minimum,
        until=spec["until"],
        end_cron=end,
        app=app.name,
        static_min=deployment.settings.min_containers,
    )


def overlaps(entries: Sequence[WarmEntry], now: datetime, lines: Lines) -> list[Problem]:
    """Two entries of one pool whose windows meet: the first to end would lower the
    minimum inside the other's window, so the config is refused."""
    problems = []
    horizon = now + timedelta(days=OVERLAP_DAYS)
    spans = {e.index: windows(e, now, horizon) for e in entries}
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if (a.gpu, a.model) != (b.gpu, b.model):
                continue
            clash = _first_clash(spans[a.index], spans[b.index])
            if clash is None:
                continue
            first, second = clash
            problems.append(
                Problem(
                    f"{b.path}",
                    f"overlaps {a.path}, which also warms {b.model} on {b.gpu}: "
                    f"{_when(first, a.timezone)} and {_when(second, b.timezone)}",
                    lines.get(("warm", b.index)),
                    "make the windows of one model and GPU apart (an end and a start at "
                    "the same minute count as meeting), or merge them into one entry",
                )
            )
    return problems


def _first_clash(a: list[Window], b: list[Window]) -> tuple[Window, Window] | None:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i].start <= b[j].end and b[j].start <= a[i].end:
            return a[i], b[j]
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return None


def _when(window: Window, zone_name: str) -> str:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(zone_name)
    start, end = window.start.astimezone(zone), window.end.astimezone(zone)
    return f"{start:%a %Y-%m-%d %H:%M} to {end:%a %H:%M} ({zone_name})"
