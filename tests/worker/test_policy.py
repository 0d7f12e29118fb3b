"""Server rules (worker/policy.py) and the one gate (worker/gate.py) on real SQLite files:
quotas under concurrency, refunds, cooldowns, role tiers, per-channel overrides,
the blocklist against disguised words, isolation between servers, the audit."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from artbot.errors import InvalidRequest, QueueFull, Refusal
from storage.db import open_db
from storage.jobs import JobStatus, JobStore
from storage.settings import SettingsStore
from worker.gate import day_start, gate, quota_status
from worker.policy import Policy, Requester, change_setting
from worker.prompts import Blocklist, normalize
from worker.requests import build_draw
from worker.server_settings import DAY

GUILD, OTHER = "111111111111", "222222222222"
ART, GENERAL = "333333333333", "444444444444"


def alice(**kw) -> Requester:
    return Requester(**{"user_id": "555555555555", "source": "discord", "server_id": GUILD,
                        "channel_id": GENERAL, **kw})


def rules_of(store: JobStore) -> SettingsStore:
    """The settings tables on the store's own connection."""
    return SettingsStore(store.db)


def set_(store: JobStore, settings, key, value, *, server=GUILD, channel=None, actor="999999"):
    return change_setting(rules_of(store), settings, server, key, value, actor=actor, via="cli",
                          channel_id=channel)


def submit(store: JobStore, settings, requester: Requester, *, count=1, steps=4, prompt="a fox",
           model=None, now=None):
    here = Policy.load(rules_of(store), settings, requester.server_id, requester.channel_id)
    spec = build_draw(here.apply(settings), prompt=prompt, count=count, steps=steps, seed=1,
                      size="64x64", model=model)
    clock = (lambda: now) if now is not None else time.time
    return store.submit(user_id=requester.user_id, kind=spec.kind, family=spec.family,
                        model=spec.model, params=spec.params, seeds=spec.seeds,
                        batch_key=spec.batch_key, source=requester.source,
                        server_id=requester.server_id, channel_id=requester.channel_id,
                        admit=gate(spec, requester, settings, clock))


@pytest.fixture
def store(settings):
    return JobStore(open_db(settings.db_path))


# -- the blocklist --------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [
    "a NASTY cat",                       # case
    "a ｎａｓｔｙ cat",                    # full-width letters
    "a n\u0301a\u0308s\u0336ty cat",     # combining marks (accent, diaeresis, strike-through)
    "a na\u200bst\u200dy cat",           # zero-width space and joiner
    "a nas\u00adty cat",                 # soft hyphen
    "ＮＡ\u200bＳＴＹ",                      # all at once
])
def test_blocklist_sees_through_disguises(prompt):
    assert Blocklist(("nasty",)).match(prompt) == "nasty"


def test_blocklist_words_stems_regexes_and_scripts():
    words = Blocklist(("cat", "gore*", "/b[l1]ood/", "血"))
    assert words.match("a cat") == "cat"
    assert words.match("scattered leaves, a category") is None  # whole words only
    assert words.match("GORY, goreFEST") == "gore*"
    assert words.match("b1ood moon") == "/b[l1]ood/"
    assert words.match("满地是血的房间") == "血"  # no spaces in Chinese: matched anywhere
    assert words.match("a red heart") is None
    assert normalize("Ｃａｆé\u200b") == "cafe"


# -- values ---------------------------------------------------------------------------------


def test_bad_values_are_refused_with_a_clear_message_and_change_nothing(store, settings):
    cases = {
        ("max_steps", "9999"): "between 1 and 150 (the operator's limit)",
        ("max_steps", "many"): "whole number",
        ("cooldown", "soon"): "duration",
        ("allowed_models", "no-such-model"): "Unknown model",
        ("blocklist", "/([a-z/"): "not a valid regular expression",
        ("nonsense", "1"): "Unknown setting",
        ("spoiler", "maybe"): "on or off",
    }
    for (key, value), message in cases.items():
        with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            set_(store, settings, key, value)
    with pytest.raises(InvalidRequest, match="whole server"):
        set_(store, settings, "daily_quota", "5", channel=ART)
    assert rules_of(store).values(GUILD) == {} and rules_of(store).audit(GUILD) == []


def test_lists_take_additions_and_removals(store, settings):
    set_(store, settings, "blocklist", "cat, dog")
    set_(store, settings, "blocklist", "+gore*, cat")
    set_(store, settings, "blocklist", "-dog")
    assert rules_of(store).values(GUILD)["blocklist"] == ["cat", "gore*"]
    set_(store, settings, "role_quotas", "<@&777777777>=50, 888888888=unlimited")
    set_(store, settings, "role_quotas", "-777777777")
    assert rules_of(store).values(GUILD)["role_quotas"] == {"888888888": "unlimited"}
    set_(store, settings, "cooldown", "1m30s")
    assert rules_of(store).values(GUILD)["cooldown"] == 90


def test_every_change_is_audited_with_who_what_when_old_and_new(store, settings):
    before = time.time()
    assert set_(store, settings, "daily_quota", "5", actor="1001") == (None, 5)
    assert set_(store, settings, "daily_quota", "5", actor="1001") is None  # no change, no entry
    set_(store, settings, "daily_quota", "2", actor="1002")
    set_(store, settings, "max_steps", "10", channel=ART, actor="1002")
    set_(store, settings, "daily_quota", None, actor="1003")  # back to the default
    entries = rules_of(store).audit(GUILD)
    assert [(e.key, e.channel_id, e.old_value, e.new_value, e.actor) for e in entries] == [
        ("daily_quota", None, 2, None, "1003"),
        ("max_steps", ART, None, 10, "1002"),
        ("daily_quota", None, 5, 2, "1002"),
        ("daily_quota", None, None, 5, "1001"),
    ]
    assert all(e.created_at >= before and e.via == "cli" for e in entries)


# -- quota ----------------------------------------------------------------------------------


@pytest.mark.parametrize("relax", ["off", "on"])
def test_fifty_concurrent_requests_with_three_images_left_accept_exactly_three(settings, relax):
    """Exactly three fast jobs; the other 47 are refused, or (relax on) queued in relax time."""
    setup = JobStore(open_db(settings.db_path))
    set_(setup, settings, "daily_quota", "5")
    set_(setup, settings, "relax", relax)
    for _ in range(2):
        submit(setup, settings, alice())  # 2 of 5 used: 3 left
    accepted, refused, errors = [], [], []
    start = threading.Barrier(50)

    def one() -> None:
        store = JobStore(open_db(settings.db_path))  # each its own connection, like processes
        start.wait()
        try:
            accepted.append(submit(store, settings, alice()).id)
        except Refusal as exc:
            refused.append(exc.key)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.conn.close()

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    jobs = setup.list_jobs(user_id=alice().user_id, limit=100)
    if relax == "off":
        assert len(accepted) == 3 and refused == ["quota"] * 47
        assert len(jobs) == 5
    else:
        assert len(accepted) == 50 and not refused
        assert len(jobs) == 52 and sum(not j.relax for j in jobs) == 5


def test_a_refusal_says_when_the_quota_resets_and_records_nothing(store, settings):
    set_(store, settings, "daily_quota", "2")
    set_(store, settings, "relax", "off")
    now = day_start(time.time()) + 3600
    submit(store, settings, alice(), now=now)
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), count=2, now=now)  # 2 asked, 1 left
    assert info.value.key == "quota_partial" and info.value.values["left"] == 1
    submit(store, settings, alice(), now=now)
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), now=now)
    assert info.value.key == "quota" and info.value.retry_at == day_start(now) + DAY
    assert "resets" in info.value.message
    assert len(store.list_jobs(limit=10)) == 2
    # The next day the quota is fresh.
    submit(store, settings, alice(), now=now + DAY)


def test_failed_and_canceled_jobs_give_their_images_back(store, settings):
    set_(store, settings, "daily_quota", "2")
    set_(store, settings, "relax", "off")
    first = submit(store, settings, alice())
    second = submit(store, settings, alice())
    with pytest.raises(Refusal):
        submit(store, settings, alice())
    (claimed,) = store.claim("w", lease_s=60)
    assert claimed.id == first.id
    store.finish_unsuccessfully(first.id, claimed.claim_token, JobStatus.FAILED, "out of memory")
    third = submit(store, settings, alice())  # the failed job's image came back
    store.cancel(second.id, error="Canceled before it started.")
    submit(store, settings, alice())  # and the canceled one's
    with pytest.raises(Refusal):
        submit(store, settings, alice())
    assert store.get(third.id).status is JobStatus.QUEUED


def test_settings_and_used_quota_survive_a_restart(settings):
    store = JobStore(open_db(settings.db_path))
    set_(store, settings, "daily_quota", "3")
    set_(store, settings, "blocklist", "nasty")
    submit(store, settings, alice(), count=2)
    store.conn.close()
    again = JobStore(open_db(settings.db_path))  # a new process
    status = quota_status(again.db, settings, alice(), time.time())
    assert (status.quota, status.used, status.left) == (3, 2, 1)
    with pytest.raises(Refusal, match="does not allow"):
        submit(again, settings, alice(), prompt="something NASTY")


def test_role_tiers_give_more_or_unlimited(store, settings):
    set_(store, settings, "daily_quota", "1")
    set_(store, settings, "relax", "off")
    set_(store, settings, "role_quotas", "700000001=3, 700000002=unlimited")
    plain, patron, staff = (alice(user_id=u, role_ids=r) for u, r in
                            [("61", ()), ("62", ("700000001",)), ("63", ("700000001", "700000002"))])
    for requester, allowed in ((plain, 1), (patron, 3), (staff, 10)):
        for _ in range(allowed):
            submit(store, settings, requester)
        if requester is not staff:
            with pytest.raises(Refusal):
                submit(store, settings, requester)


# -- fast and relax time -------------------------------------------------------------------


def test_past_the_fast_quota_a_member_gets_relax_jobs_that_use_no_fast_time(store, settings):
    set_(store, settings, "daily_quota", "2")
    now = day_start(time.time()) + 3600
    fast = submit(store, settings, alice(), count=2, now=now)
    assert not fast.relax and "relax" not in fast.params
    status = quota_status(store.db, settings, alice(), now)
    assert (status.used, status.left, status.relax_used, status.mode) == (2, 0, 0, "relax")
    relax = [submit(store, settings, alice(), count=n, now=now) for n in (1, 4)]
    assert all(j.relax and j.params["relax"] is True for j in relax)
    status = quota_status(store.db, settings, alice(), now)
    assert (status.used, status.left, status.relax_used) == (2, 0, 5)
    # A relax job that fails gives nothing to fast time; a fast one that fails does.
    (running,) = store.claim("w", lease_s=60)
    assert running.id == fast.id  # the fast job first
    store.finish_unsuccessfully(fast.id, running.claim_token, JobStatus.FAILED, "out of memory")
    again = submit(store, settings, alice(), count=2, now=now)
    assert not again.relax
    # The next day the member is on fast time again.
    assert not submit(store, settings, alice(), now=now + DAY).relax


def test_a_request_that_only_partly_fits_runs_wholly_in_relax_time(store, settings):
    set_(store, settings, "daily_quota", "3")
    submit(store, settings, alice())
    grid = submit(store, settings, alice(), count=4)  # 2 fast images left, asks for 4
    assert grid.relax
    status = quota_status(store.db, settings, alice(), time.time())
    assert (status.left, status.relax_used, status.mode) == (2, 4, "fast")  # the 2 are kept
    assert not submit(store, settings, alice(), count=2).relax
    set_(store, settings, "relax", "off")
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice())
    assert info.value.key == "quota"
    assert quota_status(store.db, settings, alice(), time.time()).mode is None


def test_role_tiers_set_the_fast_amount(store, settings):
    set_(store, settings, "daily_quota", "0")  # members without a tier: relax time only
    set_(store, settings, "role_quotas", "700000001=2, 700000002=unlimited")
    plain, patron, staff = (alice(user_id=u, role_ids=r) for u, r in
                            [("61", ()), ("62", ("700000001",)), ("63", ("700000002",))])
    assert submit(store, settings, plain).relax
    assert [submit(store, settings, patron).relax for _ in range(3)] == [False, False, True]
    assert not any(submit(store, settings, staff).relax for _ in range(5))
    assert quota_status(store.db, settings, patron, time.time()).mode == "relax"
    assert quota_status(store.db, settings, staff, time.time()).mode == "fast"


def test_without_a_server_there_is_no_relax_time(store, settings):
    set_(store, settings, "daily_quota", "0")
    operator = Requester(user_id="local:op", source="cli")
    assert not submit(store, settings, operator).relax


def test_cooldown_refuses_until_it_has_passed(store, settings):
    set_(store, settings, "cooldown", "30s")
    now = time.time()
    submit(store, settings, alice(), now=now)
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(), now=now + 10)
    assert info.value.key == "cooldown" and info.value.retry_at == pytest.approx(now + 30, abs=0.1)
    submit(store, settings, alice(), now=now + 31)


def test_max_queued_per_server(store, settings):
    set_(store, settings, "max_queued", "2")
    submit(store, settings, alice())
    submit(store, settings, alice())
    with pytest.raises(QueueFull, match="limit is 2"):
        submit(store, settings, alice())


# -- models, limits, channels ------------------------------------------------------------------


def test_per_channel_overrides(store, settings):
    set_(store, settings, "max_steps", "10", channel=ART)
    set_(store, settings, "default_model", "emoji-gan", channel=ART)
    with pytest.raises(InvalidRequest, match="between 1 and 10"):  # the builder's limit
        submit(store, settings, alice(channel_id=ART), steps=20)
    assert submit(store, settings, alice(channel_id=GENERAL), steps=20).model == "emoji-diffusion"
    assert submit(store, settings, alice(channel_id=ART), steps=4).model == "emoji-gan"


def test_the_gate_rechecks_what_the_builder_was_told(store, settings):
    """A request built before a rule changed (an old button, a crafted request) is
    still judged by the rules at the moment it is queued."""
    spec = build_draw(settings, prompt="a fox", steps=40, size="64x64", seed=1,
                      model="emoji-gan")
    set_(store, settings, "max_steps", "20")
    set_(store, settings, "allowed_families", "diffusion")
    for key, value in [("family", None), ("limit", None)]:
        with pytest.raises(Refusal) as info:
            store.submit(user_id="5", kind=spec.kind, family=spec.family, model=spec.model,
                         params=spec.params, seeds=spec.seeds, batch_key=spec.batch_key,
                         source="discord", server_id=GUILD,
                         admit=gate(spec, alice(), settings, time.time))
        assert info.value.key == key
        spec = dataclasses.replace(spec, family="diffusion", model="emoji-diffusion")
    assert store.list_jobs(limit=5) == []


def test_allowed_models_and_channels(store, settings):
    set_(store, settings, "allowed_models", "emoji-diffusion")
    set_(store, settings, "channels", f"<#{ART}>")
    with pytest.raises(Refusal, match=f"only draw in channels {ART} "):
        submit(store, settings, alice(channel_id=GENERAL))
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(channel_id=ART), model="emoji-vae")
    assert info.value.key == "model"
    assert submit(store, settings, alice(channel_id=ART)).model == "emoji-diffusion"


def test_spoilers_and_the_safety_checker(store, settings):
    set_(store, settings, "spoiler", "on")
    set_(store, settings, "safety_checker", "off")
    plain = submit(store, settings, alice())
    adult = submit(store, settings, alice(user_id="56", channel_nsfw=True))
    assert plain.params["spoiler"] and adult.params["spoiler"]
    # Unfiltered output only in an age-restricted channel.
    assert "safety_checker" not in plain.params.get("options", {})
    assert adult.params["options"]["safety_checker"] is False


# -- isolation ------------------------------------------------------------------------------


def test_one_servers_rules_and_quota_never_touch_anothers(store, settings):
    set_(store, settings, "daily_quota", "1")
    set_(store, settings, "relax", "off")
    set_(store, settings, "blocklist", "fox")
    with pytest.raises(Refusal):
        submit(store, settings, alice(), prompt="a fox")
    submit(store, settings, alice(), prompt="a cat")
    with pytest.raises(Refusal):
        submit(store, settings, alice(), prompt="a cat")
    elsewhere = alice(server_id=OTHER)
    for _ in range(3):
        submit(store, settings, elsewhere, prompt="a fox")
    assert rules_of(store).values(OTHER) == {}
    assert quota_status(store.db, settings, elsewhere, time.time()).quota is None
    assert [j.params["prompt"] for j in store.list_jobs(user_id=alice().user_id, server_id=GUILD)] == ["a cat"]

