"""Timetables: schedules, data intervals, catchup, end_date, DST and manual runs.

Pure logic: every call is given ``now`` explicitly, nothing reads the real clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from dataclasses import FrozenInstanceError

import pendulum
import pytest
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from pendulum import DateTime

from squall.common.errors import DagDefinitionError
from squall.sdk.timetables import (
    CronDataIntervalTimetable,
    DagRunInfo,
    DataInterval,
    DeltaDataIntervalTimetable,
    NullTimetable,
    OnceTimetable,
    Timetable,
    coerce_datetime,
    timetable_from_schedule,
)

AMS = "Europe/Amsterdam"
# Far enough in the future that every interval in these tests is complete.
FAR_FUTURE = pendulum.datetime(2030, 1, 1, tz="UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> DateTime:
    return pendulum.datetime(year, month, day, hour, minute, tz="UTC")


def ams(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> DateTime:
    return pendulum.datetime(year, month, day, hour, minute, tz=AMS)


def runs(
    timetable: Timetable,
    start_date: DateTime | None,
    count: int,
    *,
    catchup: bool = True,
    now: DateTime = FAR_FUTURE,
    end_date: DateTime | None = None,
) -> list[DagRunInfo]:
    """The first ``count`` automated runs, each fed back as the last one (the scheduler loop)."""
    out: list[DagRunInfo] = []
    last: DataInterval | None = None
    for _ in range(count):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last,
            start_date=start_date,
            end_date=end_date,
            catchup=catchup,
            now=now,
        )
        if info is None:
            break
        out.append(info)
        last = info.data_interval
    return out


def starts(infos: list[DagRunInfo]) -> list[DateTime]:
    return [info.data_interval.start for info in infos]


def first_run(
    timetable: Timetable,
    start_date: DateTime | None,
    *,
    catchup: bool = True,
    now: DateTime = FAR_FUTURE,
    last: DataInterval | None = None,
    end_date: DateTime | None = None,
) -> DagRunInfo | None:
    return timetable.next_dagrun_info(
        last_automated_data_interval=last,
        start_date=start_date,
        end_date=end_date,
        catchup=catchup,
        now=now,
    )


# --------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    ("preset", "expression", "first_start", "first_end"),
    [
        # 2024-01-01 is a Monday.
        ("@hourly", "0 * * * *", utc(2024, 1, 1), utc(2024, 1, 1, 1)),
        ("@daily", "0 0 * * *", utc(2024, 1, 1), utc(2024, 1, 2)),
        ("@weekly", "0 0 * * 0", utc(2024, 1, 7), utc(2024, 1, 14)),
        ("@monthly", "0 0 1 * *", utc(2024, 1, 1), utc(2024, 2, 1)),
        ("@quarterly", "0 0 1 */3 *", utc(2024, 1, 1), utc(2024, 4, 1)),
        ("@yearly", "0 0 1 1 *", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("@annually", "0 0 1 1 *", utc(2024, 1, 1), utc(2025, 1, 1)),
    ],
)
def test_presets(preset: str, expression: str, first_start: DateTime, first_end: DateTime) -> None:
    timetable = timetable_from_schedule(preset)
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert timetable.expression == expression
    assert timetable.summary == preset
    assert timetable.periodic and timetable.can_be_scheduled
    info = first_run(timetable, utc(2024, 1, 1))
    assert info == DagRunInfo(
        logical_date=first_start,
        data_interval=DataInterval(first_start, first_end),
        run_after=first_end,
    )


def test_cron_string_sequence_and_description() -> None:
    timetable = timetable_from_schedule("30 6 * * 1-5")
    assert timetable.summary == "30 6 * * 1-5"
    assert timetable.description == "At 06:30, only on Monday through Friday"
    infos = runs(timetable, utc(2024, 1, 4), 4)  # a Thursday
    assert starts(infos) == [
        utc(2024, 1, 4, 6, 30),
        utc(2024, 1, 5, 6, 30),
        utc(2024, 1, 8, 6, 30),  # the weekend is skipped
        utc(2024, 1, 9, 6, 30),
    ]
    # Intervals are contiguous: each ends where the next starts, and is due at its end.
    for info, following in itertools.pairwise(infos):
        assert info.data_interval.end == following.data_interval.start
        assert info.run_after == info.data_interval.end
        assert info.logical_date == info.data_interval.start


def test_descriptions() -> None:
    assert timetable_from_schedule("@daily").description == "At 00:00"
    assert timetable_from_schedule("@hourly").description == "Every hour"
    assert timetable_from_schedule("*/15 * * * *").description == "Every 15 minutes"
    assert timetable_from_schedule("@monthly").description == "At 00:00, on day 1 of the month"
    assert timetable_from_schedule(dt.timedelta(days=1)).summary == "1 day, 0:00:00"
    assert timetable_from_schedule(dt.timedelta(days=1)).description == "every 1 day, 0:00:00"
    assert timetable_from_schedule(relativedelta(months=1)).description == "every 1 month"


def test_returned_values_are_pendulum_utc() -> None:
    info = first_run(timetable_from_schedule("0 2 * * *", AMS), ams(2024, 1, 1))
    assert info is not None
    for value in (info.logical_date, info.data_interval.end, info.run_after):
        assert isinstance(value, DateTime)
        assert value.utcoffset() == dt.timedelta(0)
    assert info.logical_date == utc(2024, 1, 1, 1)  # 02:00 CET


def test_values_are_frozen() -> None:
    interval = DataInterval(utc(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(FrozenInstanceError):
        interval.start = utc(2023, 1, 1)  # type: ignore[misc]


def test_timetable_instance_passes_through_and_equality() -> None:
    timetable = CronDataIntervalTimetable("0 0 * * *", "UTC")
    assert timetable_from_schedule(timetable) is timetable
    assert timetable_from_schedule("@daily") == timetable
    assert timetable_from_schedule("@daily", AMS) != timetable
    assert timetable_from_schedule(None) == NullTimetable()
    assert timetable_from_schedule(dt.timedelta(hours=1)) == DeltaDataIntervalTimetable(
        dt.timedelta(hours=1)
    )


def test_timezone_may_be_a_tzinfo() -> None:
    by_name = timetable_from_schedule("0 2 * * *", AMS)
    assert timetable_from_schedule("0 2 * * *", pendulum.timezone(AMS)) == by_name
    assert timetable_from_schedule("0 2 * * *", zoneinfo.ZoneInfo(AMS)) == by_name
    assert timetable_from_schedule("0 0 * * *", dt.UTC) == timetable_from_schedule("@daily")


# --------------------------------------------------------------------------- deltas


def test_timedelta_schedule() -> None:
    timetable = timetable_from_schedule(dt.timedelta(hours=6))
    assert isinstance(timetable, DeltaDataIntervalTimetable)
    assert timetable.periodic
    # Anchored at start_date, whatever its alignment.
    infos = runs(timetable, utc(2024, 1, 1, 1, 15), 3)
    assert [(i.data_interval.start, i.data_interval.end) for i in infos] == [
        (utc(2024, 1, 1, 1, 15), utc(2024, 1, 1, 7, 15)),
        (utc(2024, 1, 1, 7, 15), utc(2024, 1, 1, 13, 15)),
        (utc(2024, 1, 1, 13, 15), utc(2024, 1, 1, 19, 15)),
    ]
    assert infos[0].run_after == utc(2024, 1, 1, 7, 15)
    assert infos[0].logical_date == utc(2024, 1, 1, 1, 15)


def test_relativedelta_months() -> None:
    timetable = timetable_from_schedule(relativedelta(months=1))
    assert isinstance(timetable, DeltaDataIntervalTimetable)
    assert starts(runs(timetable, utc(2024, 1, 15), 4)) == [
        utc(2024, 1, 15),
        utc(2024, 2, 15),
        utc(2024, 3, 15),
        utc(2024, 4, 15),
    ]


def test_relativedelta_of_hours_is_a_fixed_duration() -> None:
    assert timetable_from_schedule(relativedelta(hours=6)) == timetable_from_schedule(
        dt.timedelta(hours=6)
    )


@pytest.mark.parametrize(
    "delta",
    [dt.timedelta(0), dt.timedelta(hours=-1), relativedelta(months=-1), relativedelta()],
)
def test_non_positive_delta_is_rejected(delta: object) -> None:
    with pytest.raises(DagDefinitionError, match="positive"):
        timetable_from_schedule(delta)


def test_relativedelta_with_absolute_fields_is_rejected() -> None:
    with pytest.raises(DagDefinitionError, match="purely relative"):
        timetable_from_schedule(relativedelta(months=1, day=1))


# --------------------------------------------------------------------------- @once and None


def test_once() -> None:
    timetable = timetable_from_schedule("@once")
    assert isinstance(timetable, OnceTimetable)
    assert timetable.summary == "@once"
    assert not timetable.periodic and timetable.can_be_scheduled
    start = utc(2024, 1, 1, 10, 30)
    info = first_run(timetable, start, catchup=False, now=utc(2025, 1, 1))
    assert info == DagRunInfo(
        logical_date=start, data_interval=DataInterval(start, start), run_after=start
    )
    # Only one run, ever.
    assert first_run(timetable, start, last=DataInterval(start, start)) is None
    # No start_date, or a start_date after end_date: no run.
    assert first_run(timetable, None) is None
    assert first_run(timetable, start, end_date=utc(2023, 12, 31)) is None


def test_once_in_the_future_is_returned_but_not_due() -> None:
    now = utc(2024, 1, 1)
    info = first_run(timetable_from_schedule("@once"), utc(2024, 6, 1), now=now)
    assert info is not None
    assert info.run_after == utc(2024, 6, 1) > now


def test_none_is_never_scheduled() -> None:
    timetable = timetable_from_schedule(None)
    assert isinstance(timetable, NullTimetable)
    assert timetable.summary == "None"
    assert not timetable.can_be_scheduled and not timetable.periodic
    assert first_run(timetable, utc(2024, 1, 1)) is None
    assert first_run(timetable, utc(2024, 1, 1), catchup=False) is None


# --------------------------------------------------------------------------- catchup


def test_catchup_runs_every_interval_from_start_date() -> None:
    now = utc(2024, 3, 1)
    infos = runs(timetable_from_schedule("@daily"), utc(2024, 1, 1), 3, now=now)
    assert [(i.logical_date, i.data_interval.end, i.run_after) for i in infos] == [
        (utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 2)),
        (utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 3)),
        (utc(2024, 1, 3), utc(2024, 1, 4), utc(2024, 1, 4)),
    ]


def test_first_interval_starts_at_first_tick_at_or_after_start_date() -> None:
    timetable = timetable_from_schedule("@daily")
    info = first_run(timetable, utc(2024, 1, 1, 10))
    assert info is not None and info.logical_date == utc(2024, 1, 2)
    info = first_run(timetable, utc(2024, 1, 2))  # on a tick: that tick
    assert info is not None and info.logical_date == utc(2024, 1, 2)


def test_next_run_may_not_be_due_yet() -> None:
    now = utc(2024, 1, 1, 12)
    info = first_run(timetable_from_schedule("@daily"), utc(2024, 1, 1), now=now)
    assert info is not None
    assert info.data_interval == DataInterval(utc(2024, 1, 1), utc(2024, 1, 2))
    assert info.run_after > now


@pytest.mark.parametrize(
    ("now", "expected_start"),
    [
        # Between ticks: the latest complete interval is [10th, 11th).
        (utc(2024, 3, 11, 15), utc(2024, 3, 10)),
        # On a tick: the interval that has just ended, [10th, 11th), is complete.
        (utc(2024, 3, 11), utc(2024, 3, 10)),
    ],
)
def test_no_catchup_skips_to_latest_complete_interval(
    now: DateTime, expected_start: DateTime
) -> None:
    timetable = timetable_from_schedule("@daily")
    info = first_run(timetable, utc(2024, 1, 1), catchup=False, now=now)
    assert info is not None
    assert info.data_interval == DataInterval(expected_start, expected_start.add(days=1))
    assert info.run_after <= now
    # Also after an old automated run.
    old = DataInterval(utc(2024, 1, 5), utc(2024, 1, 6))
    info = first_run(timetable, utc(2024, 1, 1), catchup=False, now=now, last=old)
    assert info is not None and info.logical_date == expected_start


def test_no_catchup_after_a_recent_run_is_the_next_interval() -> None:
    timetable = timetable_from_schedule("@daily")
    now = utc(2024, 3, 11, 15)
    last = DataInterval(utc(2024, 3, 10), utc(2024, 3, 11))
    info = first_run(timetable, utc(2024, 1, 1), catchup=False, now=now, last=last)
    assert info is not None
    assert info.data_interval == DataInterval(utc(2024, 3, 11), utc(2024, 3, 12))
    assert info.run_after > now  # not due yet


def test_no_catchup_with_start_date_in_the_future() -> None:
    now = utc(2024, 1, 1)
    info = first_run(timetable_from_schedule("@daily"), utc(2024, 2, 1, 6), catchup=False, now=now)
    assert info is not None and info.logical_date == utc(2024, 2, 2)


def test_no_catchup_timedelta_stays_on_the_start_date_grid() -> None:
    timetable = timetable_from_schedule(dt.timedelta(hours=7))
    start = utc(2024, 1, 1)
    # 53 hours later: 7 complete intervals, the latest [42h, 49h).
    info = first_run(timetable, start, catchup=False, now=start.add(hours=53))
    assert info is not None
    assert info.data_interval == DataInterval(start.add(hours=42), start.add(hours=49))
    # Not a full interval yet: the first one, not due.
    info = first_run(timetable, start, catchup=False, now=start.add(hours=3))
    assert info is not None and info.logical_date == start


def test_no_catchup_relativedelta() -> None:
    timetable = timetable_from_schedule(relativedelta(months=1))
    info = first_run(timetable, utc(2024, 1, 15), catchup=False, now=utc(2024, 6, 20))
    assert info is not None
    assert info.data_interval == DataInterval(utc(2024, 5, 15), utc(2024, 6, 15))


def test_no_start_date_and_no_previous_run_means_no_run() -> None:
    for schedule in ("@daily", dt.timedelta(days=1)):
        timetable = timetable_from_schedule(schedule)
        assert first_run(timetable, None, now=utc(2024, 1, 1)) is None
        assert first_run(timetable, None, catchup=False, now=utc(2024, 1, 1)) is None


# --------------------------------------------------------------------------- end_date


def test_end_date_stops_runs() -> None:
    timetable = timetable_from_schedule("@daily")
    # A run whose interval *starts* on end_date is still made; none after it.
    infos = runs(timetable, utc(2024, 1, 1), 10, end_date=utc(2024, 1, 3))
    assert starts(infos) == [utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)]
    infos = runs(timetable, utc(2024, 1, 1), 10, end_date=utc(2024, 1, 2, 12))
    assert starts(infos) == [utc(2024, 1, 1), utc(2024, 1, 2)]


def test_end_date_stops_deltas_and_catchup_off() -> None:
    infos = runs(
        timetable_from_schedule(dt.timedelta(hours=12)),
        utc(2024, 1, 1),
        10,
        end_date=utc(2024, 1, 2),
    )
    assert starts(infos) == [utc(2024, 1, 1), utc(2024, 1, 1, 12), utc(2024, 1, 2)]
    # catchup=False would skip past end_date: no run at all.
    info = first_run(
        timetable_from_schedule("@daily"),
        utc(2024, 1, 1),
        catchup=False,
        now=utc(2024, 6, 1),
        end_date=utc(2024, 2, 1),
    )
    assert info is None


# --------------------------------------------------------------------------- DST


def test_cron_keeps_local_time_across_spring_forward() -> None:
    # Europe/Amsterdam: 2024-03-31 02:00 CET -> 03:00 CEST.
    timetable = timetable_from_schedule("0 3 * * *", AMS)
    infos = runs(timetable, ams(2024, 3, 30), 3)
    assert starts(infos) == [
        utc(2024, 3, 30, 2),  # 03:00 CET
        utc(2024, 3, 31, 1),  # 03:00 CEST
        utc(2024, 4, 1, 1),
    ]
    assert [s.in_timezone(AMS).hour for s in starts(infos)] == [3, 3, 3]
    # The interval over the change is 23 hours long.
    assert infos[0].data_interval.end - infos[0].data_interval.start == dt.timedelta(hours=23)


def test_cron_in_the_skipped_hour_runs_after_the_change() -> None:
    timetable = timetable_from_schedule("30 2 * * *", AMS)
    infos = runs(timetable, ams(2024, 3, 30), 3)
    assert [s.in_timezone(AMS).isoformat() for s in starts(infos)] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:30:00+02:00",  # 02:30 does not exist that day
        "2024-04-01T02:30:00+02:00",
    ]
    # 0 2 * * *: 02:00 local on both sides; the UTC time shifts by an hour.
    infos = runs(timetable_from_schedule("0 2 * * *", AMS), ams(2024, 3, 29), 4)
    assert starts(infos) == [
        utc(2024, 3, 29, 1),
        utc(2024, 3, 30, 1),
        utc(2024, 3, 31, 1),  # 03:00 CEST, the first instant after 02:00 CET
        utc(2024, 4, 1, 0),
    ]


def test_cron_keeps_local_time_across_fall_back() -> None:
    # Europe/Amsterdam: 2024-10-27 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
    timetable = timetable_from_schedule("30 2 * * *", AMS)
    infos = runs(timetable, ams(2024, 10, 26), 3)
    assert [s.in_timezone(AMS).isoformat() for s in starts(infos)] == [
        "2024-10-26T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",  # once, at the second 02:30
        "2024-10-28T02:30:00+01:00",
    ]
    assert starts(infos) == [
        utc(2024, 10, 26, 0, 30),
        utc(2024, 10, 27, 1, 30),
        utc(2024, 10, 28, 1, 30),
    ]
    assert infos[0].data_interval.end - infos[0].data_interval.start == dt.timedelta(hours=25)


@pytest.mark.parametrize(("schedule", "minutes"), [("@hourly", 60), ("*/20 * * * *", 20)])
@pytest.mark.parametrize("start", [ams(2024, 3, 30, 22), ams(2024, 10, 26, 22)])
def test_sub_daily_cron_keeps_a_steady_pace_across_dst(
    schedule: str, minutes: int, start: DateTime
) -> None:
    timetable = timetable_from_schedule(schedule, AMS)
    infos = runs(timetable, start, 8 * 60 // minutes)
    for info in infos:
        interval = info.data_interval
        assert interval.end - interval.start == dt.timedelta(minutes=minutes)


def test_timedelta_is_a_fixed_duration_across_dst() -> None:
    timetable = timetable_from_schedule(dt.timedelta(days=1), AMS)
    spring = runs(timetable, ams(2024, 3, 30), 3)
    assert starts(spring) == [utc(2024, 3, 29, 23), utc(2024, 3, 30, 23), utc(2024, 3, 31, 23)]
    assert [s.in_timezone(AMS).hour for s in starts(spring)] == [0, 0, 1]
    fall = runs(timetable, ams(2024, 10, 26), 3)
    assert starts(fall) == [utc(2024, 10, 25, 22), utc(2024, 10, 26, 22), utc(2024, 10, 27, 22)]
    assert [s.in_timezone(AMS).hour for s in starts(fall)] == [0, 0, 23]


def test_relativedelta_counts_on_the_local_calendar() -> None:
    timetable = timetable_from_schedule(relativedelta(months=1), AMS)
    infos = runs(timetable, ams(2024, 2, 1), 3)
    assert [s.in_timezone(AMS).isoformat() for s in starts(infos)] == [
        "2024-02-01T00:00:00+01:00",
        "2024-03-01T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",  # still local midnight after the spring change
    ]
    days = timetable_from_schedule(relativedelta(days=1), AMS)
    assert [s.in_timezone(AMS).hour for s in starts(runs(days, ams(2024, 10, 26), 3))] == [0, 0, 0]


@pytest.mark.parametrize(
    "schedule",
    ["@hourly", "*/15 * * * *", "30 2 * * *", "0 0 * * *", "15 1-3 * * *", "0 */2 * * *"],
)
@pytest.mark.parametrize(
    ("tz", "start"),
    [
        (AMS, (2024, 3, 29)),
        (AMS, (2024, 10, 25)),
        ("America/Sao_Paulo", (2018, 11, 2)),  # DST began at midnight: 00:00 was skipped
        ("America/Sao_Paulo", (2019, 2, 15)),  # DST ended at midnight: 23:00 twice
        ("Australia/Lord_Howe", (2024, 4, 5)),  # a 30 minute change
        ("UTC", (2024, 3, 29)),
    ],
)
def test_cron_invariants_across_dst(schedule: str, tz: str, start: tuple[int, int, int]) -> None:
    timetable = timetable_from_schedule(schedule, tz)
    infos = runs(timetable, pendulum.datetime(*start, tz=tz), 120)
    for info, following in itertools.pairwise(infos):
        assert info.data_interval.start < info.data_interval.end
        assert info.data_interval.end == following.data_interval.start
        # A manual run triggered at the end of an interval gets that very interval.
        assert timetable.infer_manual_data_interval(run_after=info.data_interval.end) == (
            info.data_interval
        )


# --------------------------------------------------------------------------- manual runs


def test_manual_interval_cron() -> None:
    timetable = timetable_from_schedule("@daily")
    assert timetable.infer_manual_data_interval(run_after=utc(2024, 1, 25, 1)) == DataInterval(
        utc(2024, 1, 24), utc(2024, 1, 25)
    )
    # Exactly on a tick: the interval that ends there.
    assert timetable.infer_manual_data_interval(run_after=utc(2024, 1, 25)) == DataInterval(
        utc(2024, 1, 24), utc(2024, 1, 25)
    )


def test_manual_interval_cron_in_dag_timezone() -> None:
    timetable = timetable_from_schedule("0 2 * * *", AMS)
    interval = timetable.infer_manual_data_interval(run_after=ams(2024, 3, 31, 12))
    assert interval == DataInterval(utc(2024, 3, 30, 1), utc(2024, 3, 31, 1))


def test_manual_interval_deltas() -> None:
    run_after = utc(2024, 1, 25, 13, 17)
    assert timetable_from_schedule(dt.timedelta(hours=6)).infer_manual_data_interval(
        run_after=run_after
    ) == DataInterval(utc(2024, 1, 25, 7, 17), run_after)
    assert timetable_from_schedule(relativedelta(months=1)).infer_manual_data_interval(
        run_after=run_after
    ) == DataInterval(utc(2023, 12, 25, 13, 17), run_after)


@pytest.mark.parametrize("schedule", ["@once", None])
def test_manual_interval_once_and_none(schedule: str | None) -> None:
    run_after = utc(2024, 1, 25, 13, 17)
    interval = timetable_from_schedule(schedule).infer_manual_data_interval(run_after=run_after)
    assert interval == DataInterval(run_after, run_after)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "cron",
    [
        "61 * * * *",
        "not a cron",
        "* * * *",
        "0 0 * * * *",  # 6 fields (seconds) are not supported
        "0 0 30 2 *",  # never happens
        "0 25 * * *",
        "@fortnightly",
    ],
)
def test_invalid_cron_names_the_value(cron: str) -> None:
    with pytest.raises(DagDefinitionError) as excinfo:
        timetable_from_schedule(cron)
    assert repr(cron) in str(excinfo.value)


@pytest.mark.parametrize("schedule", [42, 1.5, ["0 0 * * *"], dt.datetime(2024, 1, 1)])
def test_unsupported_schedule_type_names_the_value(schedule: object) -> None:
    with pytest.raises(DagDefinitionError) as excinfo:
        timetable_from_schedule(schedule)
    assert repr(schedule) in str(excinfo.value)


def test_invalid_timezone() -> None:
    with pytest.raises(DagDefinitionError, match="Mars/Olympus_Mons"):
        timetable_from_schedule("@daily", "Mars/Olympus_Mons")


# --------------------------------------------------------------------------- coerce_datetime


def test_coerce_datetime() -> None:
    assert coerce_datetime(None) is None
    naive = coerce_datetime(dt.datetime(2024, 1, 1, 12), AMS)
    assert isinstance(naive, DateTime)
    assert naive == utc(2024, 1, 1, 11)
    assert naive.timezone_name == AMS
    aware = coerce_datetime(dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5))))
    assert aware == utc(2024, 1, 1, 7)
    assert coerce_datetime(utc(2024, 1, 1), AMS) == utc(2024, 1, 1)
    assert coerce_datetime("2024-01-01", AMS) == ams(2024, 1, 1)
    assert coerce_datetime("2024-01-01T10:00:00", AMS) == ams(2024, 1, 1, 10)
    assert coerce_datetime("2024-01-01T10:00:00+00:00", AMS) == utc(2024, 1, 1, 10)
    assert coerce_datetime(dt.date(2024, 1, 1), pendulum.timezone(AMS)) == ams(2024, 1, 1)


@pytest.mark.parametrize("text", ["garbage", "2024-13-01", "12:00", "P1D"])
def test_coerce_datetime_rejects_non_datetimes(text: str) -> None:
    with pytest.raises(ValueError, match="date-time"):
        coerce_datetime(text)


def test_coerce_datetime_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        coerce_datetime(12345)  # type: ignore[arg-type]
