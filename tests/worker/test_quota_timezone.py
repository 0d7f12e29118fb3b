"""Each server's quota day in its own time zone (the `timezone` setting): through the
gate on a real SQLite file, at times of day the tests choose."""

from __future__ import annotations

import datetime as dt
import types
from zoneinfo import ZoneInfo

import pytest

from artbot.errors import InvalidRequest, Refusal
from storage.db import open_db
from storage.jobs import JobStore
import storage.jobs
from tests.worker.test_policy import GUILD, OTHER, alice, rules_of, set_
from tests.worker.test_policy import submit as submit_now
from worker.gate import quota_status
from worker.policy import Policy
from worker.quota_day import day_start, next_day_start
from worker.server_settings import format_value


@pytest.fixture
def store(settings, monkeypatch):
    """The queue, on a clock of the test's: `submit(..., now=T)` hands the gate T and
    records the job as made at T (`storage.jobs` reads `time.time()`)."""
    monkeypatch.setattr(storage.jobs, "time", types.SimpleNamespace(time=lambda: _clock[0]))
    return JobStore(open_db(settings.db_path))


_clock = [0.0]


def submit(store, settings, requester, *, now: float, **kw):
    _clock[0] = now
    return submit_now(store, settings, requester, now=now, **kw)


def at(zone: str, *when: int) -> float:
    """A wall-clock time in `zone` as a Unix time: at("Asia/Tokyo", 2025, 6, 10, 23, 30)."""
    return dt.datetime(*when, tzinfo=ZoneInfo(zone)).timestamp()


def one_a_day(store, settings, zone: str | None) -> None:
    set_(store, settings, "daily_quota", "1")
    set_(store, settings, "relax", "off")
    if zone:
        set_(store, settings, "timezone", zone)


def test_east_of_utc_the_quota_comes_back_at_local_midnight(store, settings):
    one_a_day(store, settings, "Asia/Tokyo")
    submit(store, settings, alice(), now=at("Asia/Tokyo", 2025, 6, 10, 23, 30))
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), now=at("Asia/Tokyo", 2025, 6, 10, 23, 50))
    assert info.value.key == "quota"
    assert info.value.retry_at == at("Asia/Tokyo", 2025, 6, 11, 0, 0)  # 15:00 UTC
    # Five past midnight in Tokyo is still the same day in UTC: the quota is back anyway.
    after = at("Asia/Tokyo", 2025, 6, 11, 0, 5)
    assert dt.datetime.fromtimestamp(after, dt.timezone.utc).day == 10
    assert submit(store, settings, alice(), now=after).id
    assert len(store.list_jobs(limit=10)) == 2


def test_west_of_utc_midnight_utc_gives_nothing_back(store, settings):
    one_a_day(store, settings, "America/Los_Angeles")
    submit(store, settings, alice(), now=at("America/Los_Angeles", 2025, 6, 10, 16, 30))  # 23:30 UTC
    past_utc_midnight = at("America/Los_Angeles", 2025, 6, 10, 17, 30)  # 00:30 UTC, the 11th
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), now=past_utc_midnight)
    assert info.value.retry_at == at("America/Los_Angeles", 2025, 6, 11, 0, 0)
    status = quota_status(store.db, settings, alice(), past_utc_midnight)
    assert (status.used, status.left, status.timezone) == (1, 0, "America/Los_Angeles")
    assert status.resets_at == at("America/Los_Angeles", 2025, 6, 11, 0, 0)
    later = at("America/Los_Angeles", 2025, 6, 11, 0, 1)
    assert submit(store, settings, alice(), now=later).id
    assert quota_status(store.db, settings, alice(), later).used == 1


def test_without_a_timezone_the_day_is_utc_and_servers_keep_their_own(store, settings):
    one_a_day(store, settings, "Asia/Tokyo")
    # OTHER sets nothing: its day is UTC's.
    set_(store, settings, "daily_quota", "1", server=OTHER)
    set_(store, settings, "relax", "off", server=OTHER)
    elsewhere = alice(server_id=OTHER)
    submit(store, settings, elsewhere, now=at("UTC", 2025, 6, 10, 14, 30))
    with pytest.raises(Refusal) as info:
        submit(store, settings, elsewhere, now=at("UTC", 2025, 6, 10, 15, 5))
    assert info.value.retry_at == at("UTC", 2025, 6, 11, 0, 0)
    assert Policy.load(rules_of(store), settings, OTHER)["timezone"] == "UTC"


@pytest.mark.parametrize("when, hours", [
    ((2025, 3, 30, 12, 0), 23),   # Europe/Berlin springs forward
    ((2025, 10, 26, 12, 0), 25),  # and falls back
    ((2025, 6, 1, 12, 0), 24),
])
def test_a_daylight_saving_day_still_ends_at_midnight(store, settings, when, hours):
    one_a_day(store, settings, "Europe/Berlin")
    now = at("Europe/Berlin", *when)
    submit(store, settings, alice(), now=now)
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), now=now + 60)
    midnight = dt.datetime(*when[:3], tzinfo=ZoneInfo("Europe/Berlin")) + dt.timedelta(days=1)
    assert info.value.retry_at == midnight.replace(hour=0).timestamp()
    assert next_day_start(now, "Europe/Berlin") - day_start(now, "Europe/Berlin") == hours * 3600


def test_a_midnight_the_clocks_skip_starts_the_day_when_it_can():
    # Havana moves its clocks from 00:00 to 01:00 on 9 March 2025: the day starts at 01:00.
    noon = at("America/Havana", 2025, 3, 9, 12, 0)
    start = dt.datetime.fromtimestamp(day_start(noon, "America/Havana"), ZoneInfo("America/Havana"))
    assert (start.day, start.hour, start.minute) == (9, 1, 0)


def test_a_servers_timezone_is_set_by_its_iana_name(store, settings):
    assert set_(store, settings, "timezone", "europe/berlin") == (None, "Europe/Berlin")
    assert format_value("timezone", Policy.load(rules_of(store), settings, GUILD)["timezone"]) \
        == "Europe/Berlin"
    for typed, message in (
            ("Europe/Berln", "Unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)"),
            ("new york", "(did you mean America/New_York?)"),
            ("+02:00", "Unknown time zone '+02:00'; give an IANA name such as Europe/Berlin"),
            ("../../etc/passwd", "Unknown time zone"), ("Mars/Olympus_Mons", "Unknown time zone")):
        with pytest.raises(InvalidRequest) as info:
            set_(store, settings, "timezone", typed)
        assert message in info.value.message and len(info.value.message.splitlines()) == 1
    assert rules_of(store).values(GUILD)["timezone"] == "Europe/Berlin"  # unchanged
    with pytest.raises(InvalidRequest, match="whole server"):
        set_(store, settings, "timezone", "UTC", channel="333333333333")
    set_(store, settings, "timezone", None)
    assert Policy.load(rules_of(store), settings, GUILD)["timezone"] == "UTC"
