"""The custom timetable of Airflow's documentation (howto/timetable), registered through a
plugin: a run for each workday, covering that day, created once it is over."""

from datetime import timedelta

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import UTC, Date, DateTime, Time


class AfterWorkdayTimetable(Timetable):
    def __init__(self, hour: int = 0) -> None:
        self.hour = hour

    @property
    def summary(self) -> str:
        return f"after workday ({self.hour}h)"

    description = "Once every workday, after it is over"

    def serialize(self):
        return {"hour": self.hour}

    @classmethod
    def deserialize(cls, data):
        return cls(data["hour"])

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        start = DateTime.combine((run_after - timedelta(days=1)).date(), Time.min).replace(
            tzinfo=UTC)
        while start.weekday() >= 5:
            start -= timedelta(days=1)
        return DataInterval(start=start, end=start + timedelta(days=1))

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            last_start = last_automated_data_interval.start
            weekday = last_start.weekday()
            delta = timedelta(days=1) if 0 <= weekday < 4 else timedelta(days=7 - weekday)
            next_start = DateTime.combine((last_start + delta).date(), Time.min).replace(
                tzinfo=UTC)
        else:
            next_start = restriction.earliest
            if next_start is None:
                return None
            if not restriction.catchup:
                next_start = max(next_start,
                                 DateTime.combine(Date.today(), Time.min).replace(tzinfo=UTC))
            elif next_start.time() != Time.min:
                next_start = DateTime.combine(next_start.date() + timedelta(days=1),
                                              Time.min).replace(tzinfo=UTC)
            if next_start.weekday() in (5, 6):
                next_start = next_start + timedelta(days=7 - next_start.weekday())
        if restriction.latest is not None and next_start > restriction.latest:
            return None
        return DagRunInfo.interval(start=next_start, end=next_start + timedelta(days=1))


class WorkdayTimetablePlugin(AirflowPlugin):
    name = "workday_timetable_plugin"
    timetables = [AfterWorkdayTimetable]
