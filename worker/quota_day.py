"""The quota day of a server: from midnight to midnight in its `timezone`
setting (an IANA name such as Europe/Berlin; UTC where none is set).

Days are found through the calendar, not by adding 24 hours, so a day that
daylight saving time makes 23 or 25 hours long still ends at midnight. Where a
zone's clocks jump over midnight (America/Havana in March), the day starts at
the first moment it has.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import logging
import zoneinfo

from artbot.errors import InvalidRequest

DEFAULT_ZONE = "UTC"

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _names() -> dict[str, str]:
    """Every IANA zone this machine knows (the tzdata package where the system has
    none), by its name case-folded."""
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # Stored while the zone existed, gone from a newer tzdata: days go on in UTC.
        log.warning("time zone %r is unknown here; counting quota days in UTC", name)
        return dt.timezone.utc


def parse_timezone(text: str) -> str:
    """A zone's IANA name from what an admin typed ('europe/berlin' -> 'Europe/Berlin');
    InvalidRequest naming the closest zone for anything else."""
    typed = text.strip()
    name = _names().get(typed.replace(" ", "_").casefold())
    if name is not None:
        return name
    raise InvalidRequest(f"Unknown time zone {typed!r}{_suggestion(typed)}; give an IANA "
                         "name such as Europe/Berlin, America/New_York or UTC.")


def _suggestion(typed: str) -> str:
    key = typed.replace(" ", "_").casefold()
    names = _names()
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    if not close:  # a city alone: 'berlin', 'new york'
        cities = {name.rsplit("/", 1)[-1]: name for name in names if "/" in name}
        close = [cities[c] for c in difflib.get_close_matches(key, list(cities), n=1, cutoff=0.8)]
    return f" (did you mean {names[close[0]]}?)" if close else ""


def day_start(now: float, zone: str = DEFAULT_ZONE) -> float:
    """When the quota day that `now` is in began: the last midnight in `zone`."""
    tz = _zone(zone)
    return _midnight(dt.datetime.fromtimestamp(now, tz).date(), tz)


def next_day_start(now: float, zone: str = DEFAULT_ZONE) -> float:
    """When the quota day that `now` is in ends: the next midnight in `zone`."""
    tz = _zone(zone)
    return _midnight(dt.datetime.fromtimestamp(now, tz).date() + dt.timedelta(days=1), tz)


def _midnight(day: dt.date, tz: dt.tzinfo) -> float:
    # fold=0: a midnight that happens twice counts from its first time; one the clocks
    # jump over is read with the offset before the jump, which is the moment the day began.
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
