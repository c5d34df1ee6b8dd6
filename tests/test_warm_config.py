"""`warm:` entries: each bad field named with its fix, the end schedule derived from
`until`, and the windows (a real calendar, daylight saving time included) that overlap
checks and prices use."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import BASE_CONFIG

from mvgen.config import build_plan, load_plan
from mvgen.errors import ConfigError
from mvgen.loader import parse_yaml
from mvgen.warmup import (
    WarmError,
    active,
    end_cron,
    month_hours,
    parse_cron,
    parse_until,
    scheduled_minimum,
    windows,
)

GOOD = (
    '{cron: "0 8 * * 1-5", timezone: Europe/Paris, model: gemma-3-12b, gpu: h100, until: "18:00"}'
)


def with_warm(*entries: str, base: str = BASE_CONFIG) -> str:
    return base + "warm:\n" + "".join(f"  - {e}\n" for e in entries)


def errors_for(write_config, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_plan(write_config(text))
    return info.value.render()


def test_a_good_entry_resolves_to_its_app_pool_and_end_schedule(write_config) -> None:
    plan = load_plan(write_config(with_warm(GOOD)))
    (entry,) = plan.warm
    assert (entry.path, entry.app, entry.model, entry.gpu) == (
        "warm[0]",
        "vllm-h100",
        "gemma-3-12b",
        "h100",
    )
    assert (entry.cron, entry.timezone, entry.until) == ("0 8 * * 1-5", "Europe/Paris", "18:00")
    assert entry.end_cron == "0 18 * * 1-5"
    assert (entry.min_containers, entry.static_min) == (1, 0)


def test_timezone_defaults_to_utc_and_min_containers_to_one(write_config) -> None:
    entry = '{cron: "0 8 * * *", model: gemma-3-12b, gpu: l40s, until: "09:30"}'
    (warm,) = load_plan(write_config(with_warm(entry))).warm
    assert (warm.timezone, warm.min_containers, warm.end_cron) == ("UTC", 1, "30 9 * * *")


def entry(**changes: str) -> str:
    fields = {
        "cron": '"0 8 * * 1-5"',
        "timezone": "Europe/Paris",
        "model": "gemma-3-12b",
        "gpu": "h100",
        "until": '"18:00"',
    }
    fields.update(changes)
    return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items() if v) + "}"


CASES = [
    # (what, warm entry, fragments the message must contain)
    ("unknown GPU", entry(gpu="h10"), ["warm[0].gpu", "unknown GPU 'h10'", "did you mean 'h100'"]),
    (
        "unknown model",
        entry(model="gemma-3-12"),
        ["warm[0].model", "unknown model 'gemma-3-12'", "did you mean 'gemma-3-12b'"],
    ),
    (
        "model not served on that GPU",
        entry(gpu="l40s", model="qwen3-vl-30b"),
        ["warm[0].gpu", "qwen3-vl-30b is not served on l40s; its GPUs: h100", "models.qwen3"],
    ),
    (
        "unknown time zone",
        entry(timezone="Europe/Pari"),
        ["warm[0].timezone", "unknown time zone 'Europe/Pari'", "did you mean 'Europe/Paris'"],
    ),
    ("a city for a zone", entry(timezone="paris"), ["did you mean 'Europe/Paris'"]),
    ("not a zone at all", entry(timezone='"+02:00"'), ["warm[0].timezone", "IANA name"]),
    (
        "cron with six fields",
        entry(cron='"0 0 8 * * 1-5"'),
        ["warm[0].cron", "has 6 fields; cron needs 5", "seconds are not supported"],
    ),
    ("cron macro", entry(cron='"@daily"'), ["warm[0].cron", "1 fields", "five fields"]),
    (
        "cron value out of range",
        entry(cron='"0 25 * * *"'),
        ["warm[0].cron", "not a valid cron expression: Bad hour", "hour (0-23)"],
    ),
    (
        "cron extension Modal may not take",
        entry(cron='"0 8 * * MON#2"'),
        ["warm[0].cron", "day-of-week field 'MON#2' is not standard cron syntax"],
    ),
    (
        "cron that never runs",
        entry(cron='"0 8 31 2 *"'),
        ["warm[0].cron", "Bad day-of-month"],
    ),
    (
        "every minute of an hour",
        entry(cron='"* 8 * * 1-5"'),
        ["warm[0].cron", "starts at 60 times a day", "did you mean '0 8 * * 1-5'?"],
    ),
    (
        "two start times",
        entry(cron='"0 8,13 * * *"'),
        ["warm[0].cron", "starts at 2 times a day (08:00, 13:00)", "one entry per start"],
    ),
    (
        "until unquoted, read by YAML as a number",
        entry(until="18:00"),
        ["warm[0].until", "1080 should be string", "quotes", "18:00 as the number 1080"],
    ),
    ("until not a time of day", entry(until='"6pm"'), ["warm[0].until", "'6pm' is not valid"]),
    ("until out of range", entry(until='"24:00"'), ["warm[0].until", "'24:00'"]),
    ("until equals the start", entry(until='"08:00"'), ["warm[0].until", "the start time, 08:00"]),
    (
        "past midnight on a day-of-month schedule",
        entry(cron='"0 22 1 * *"', until='"06:00"'),
        ["warm[0].until", "ends the next day", "day-of-month '1'", "use * for day-of-month"],
    ),
    (
        "min_containers not above the model's own",
        entry(min_containers="0"),
        ["warm[0].min_containers", "0 is below the minimum, 1"],
    ),
    ("unknown field", entry(untill='"18:00"'), ["warm[0].untill", "did you mean 'until'"]),
    ("missing field", entry(model=""), ["warm[0]", "'model' is required"]),
]


@pytest.mark.parametrize(("what", "warm", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_warm_entry_is_explained(write_config, what: str, warm: str, fragments) -> None:
    config = BASE_CONFIG.replace("tool_parser: hermes", "tool_parser: hermes\n    gpus: [h100]")
    config = config.replace("l40s: {quantization: fp8, max_model_len: 8192}", "h100: {}")
    message = errors_for(write_config, with_warm(warm, base=config))
    for fragment in fragments:
        assert fragment in message, f"{what}: {fragment!r} missing from:\n{message}"


def test_a_minimum_not_above_the_models_own_is_refused(write_config) -> None:
    config = BASE_CONFIG + "defaults: {min_containers: 2}\n"
    message = errors_for(write_config, with_warm(entry(min_containers="2"), base=config))
    assert "warm[0].min_containers: 2 is not above the 2 container(s)" in message
    assert "set it above 2" in message


def test_every_problem_of_an_entry_is_listed_at_once(write_config) -> None:
    bad = entry(gpu="h10", model="gemma", timezone="Mars/Olympus", cron='"0 8 * *"')
    message = errors_for(write_config, with_warm(GOOD, bad))
    for path in ("warm[1].gpu", "warm[1].model", "warm[1].timezone", "warm[1].cron"):
        assert path in message
    assert "warm[0]" not in message


def test_legacy_mode_refuses_warm_up(write_config) -> None:
    text = with_warm(GOOD, base=BASE_CONFIG.replace("mode: gpu", "mode: legacy"))
    message = errors_for(write_config, text)
    assert "warm: scheduled warm-up needs mode: gpu" in message
    assert "use mode: gpu" in message


def test_overlapping_entries_of_one_pool_are_refused(write_config) -> None:
    late = entry(cron='"0 17 * * 5"', until='"20:00"')
    message = errors_for(write_config, with_warm(GOOD, late))
    assert "warm[1]: overlaps warm[0], which also warms gemma-3-12b on h100" in message
    assert "Fri" in message and "17:00 to Fri 20:00 (Europe/Paris)" in message


def test_an_end_and_a_start_at_the_same_minute_count_as_overlap(write_config) -> None:
    evening = entry(cron='"0 18 * * 1-5"', until='"22:00"')
    assert "overlaps warm[0]" in errors_for(write_config, with_warm(GOOD, evening))


def test_overlap_is_compared_across_time_zones(write_config) -> None:
    # 17:00-19:00 UTC is 18:00-20:00 in Paris in winter and 19:00-21:00 in summer:
    # it meets the 08:00-18:00 Paris window only in winter, which a year ahead includes.
    utc = entry(cron='"0 17 * * 1-5"', timezone="UTC", until='"19:00"')
    assert "overlaps warm[0]" in errors_for(write_config, with_warm(GOOD, utc))


def test_separate_pools_and_apart_windows_may_share_a_schedule(write_config) -> None:
    other_pool = entry(model="qwen3-vl-30b")
    other_gpu = entry(gpu="l40s")
    weekend = entry(cron='"0 10 * * 6,0"', until='"16:00"', min_containers="2")
    plan = load_plan(write_config(with_warm(GOOD, other_pool, other_gpu, weekend)))
    assert [e.path for e in plan.warm] == ["warm[0]", "warm[1]", "warm[2]", "warm[3]"]


# --- the schedule's arithmetic ------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "until", "end"),
    [
        ("0 8 * * 1-5", "18:00", "0 18 * * 1-5"),
        ("30 7 1,15 JAN-JUN *", "12:45", "45 12 1,15 JAN-JUN *"),
        ("0 22 * * *", "06:00", "0 6 * * *"),
        ("0 22 * * FRI", "06:00", "0 6 * * 6"),
        ("0 22 * * 5,6,0", "06:00", "0 6 * * 0,1,6"),
        ("0 23 * * 1-5/2", "01:00", "0 1 * * 2,4,6"),
        ("0 20 * * 7", "02:00", "0 2 * * 1"),
    ],
)
def test_the_end_schedule_names_the_day_each_window_ends(cron: str, until: str, end: str) -> None:
    assert end_cron(parse_cron(cron), parse_until(until)) == end


def test_the_end_schedule_fires_exactly_at_each_windows_end() -> None:
    """Over a year, the end cron's runs are the windows' ends, one for one."""
    from cronsim import CronSim

    plan = build_plan(
        parse_yaml(with_warm(entry(cron='"0 21 * * FRI,SAT,SUN"', until='"03:30"')))[0]
    )
    (e,) = plan.warm
    start = datetime(2027, 1, 1, tzinfo=UTC)
    found = windows(e, start, start + timedelta(days=365))
    ends = [w.end for w in found if w.end < start + timedelta(days=365)]
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(e.timezone)
    fired = []
    for t in CronSim(e.end_cron, found[0].start.astimezone(zone)):
        if t.astimezone(UTC) >= start + timedelta(days=365):
            break
        fired.append(t.astimezone(UTC))
    assert fired == ends
    assert len(ends) == 156  # Friday, Saturday and Sunday nights of 52 weeks


def test_windows_follow_daylight_saving_time() -> None:
    """An overnight window in Paris is 8 h, except the night clocks go forward (7 h)
    and back (9 h)."""
    plan = build_plan(parse_yaml(with_warm(entry(cron='"0 22 * * *"', until='"06:00"')))[0])
    (e,) = plan.warm
    hours = {
        w.start.date(): w.hours
        for w in windows(
            e, datetime(2027, 3, 26, 12, tzinfo=UTC), datetime(2027, 3, 29, tzinfo=UTC)
        )
    }
    # Starts at 22:00 Paris = 21:00 UTC in winter, 20:00 UTC in summer.
    assert hours == {date(2027, 3, 26): 8.0, date(2027, 3, 27): 7.0, date(2027, 3, 28): 8.0}
    autumn = windows(e, datetime(2027, 10, 30, 12, tzinfo=UTC), datetime(2027, 10, 31, tzinfo=UTC))
    assert [w.hours for w in autumn] == [9.0]


def test_month_hours_count_the_calendar_from_a_given_day() -> None:
    plan = build_plan(parse_yaml(with_warm(GOOD))[0])
    (e,) = plan.warm
    # 2027-03-01 is a Monday: 22 weekdays in the 30 days to March 30, 10 h each.
    assert month_hours(e, date(2027, 3, 1)) == 220.0
    # From a Saturday: 2027-05-01 to 05-30 holds 20 weekdays.
    assert month_hours(e, date(2027, 5, 1)) == 200.0


def test_the_scheduled_minimum_is_the_entrys_inside_a_window_only() -> None:
    plan = build_plan(parse_yaml(with_warm(entry(min_containers="3")))[0])
    (e,) = plan.warm
    monday = datetime(2027, 3, 1, tzinfo=UTC)  # 08:00 Paris is 07:00 UTC in March
    assert active(e, monday.replace(hour=6, minute=59)) is None
    assert active(e, monday.replace(hour=7)) is not None
    assert scheduled_minimum(plan, "h100", "gemma-3-12b", 0, monday.replace(hour=12)) == 3
    assert scheduled_minimum(plan, "h100", "gemma-3-12b", 0, monday.replace(hour=17)) == 0
    assert scheduled_minimum(plan, "l40s", "gemma-3-12b", 0, monday.replace(hour=12)) == 0
    saturday = datetime(2027, 3, 6, 12, tzinfo=UTC)
    assert scheduled_minimum(plan, "h100", "gemma-3-12b", 0, saturday) == 0


def test_parse_cron_refuses_before_cronsim_sees_an_extension() -> None:
    for text in ("0 8 L * *", "0 8 15W * *", "0 8 ? * *", "0 8 * * 5L"):
        with pytest.raises(WarmError, match="not standard cron syntax"):
            parse_cron(text)
