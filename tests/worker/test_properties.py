"""Properties of the request builders and the gate, on random prompts and options.

Whatever a user types (any Unicode, controls, bidirectional overrides, NUL, huge
texts; numbers that are negative, huge, nan or inf; sizes as any string), a
builder either refuses it with a `UserError` of one clean line, or returns a
`JobSpec` that is valid to store. And the gate (`JobQueue.submit`, on a real
SQLite file, for a server with a blocklist and a daily quota) records a job for
an admitted request only: a refused one leaves the jobs table as it was.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from artbot.config import Settings
from artbot.errors import UserError
from storage.db import open_db
from storage.settings import SettingsStore
from worker.policy import Requester, change_setting
from worker.prompts import clean_prompt, has_controls, has_visible
from worker.queue import LocalJobQueue
from worker.requests import (MAX_PROMPT_CHARS, SAMPLER_NAMES, SEED_LIMIT, JobSpec, build_blend,
                             build_draw, build_outpaint, build_stylize, build_upscale, build_vary,
                             file_parent)

SERVER = "4242"
NASTY = ("nasty", "a ｎａｓｔｙ cat", "a na\u200bsty cat", "gr0ss things")

# Characters that make trouble, mixed into ordinary letters.
TROUBLE = list("\x00\x07\x1b\x7f\x85\x9b\t\n\r \u00a0\u200b\u200c\u200d\u200e\u200f\u202a\u202e"
               "\u2066\u2069\u061c\u2028\u0301\u20dd\u3164\u2800\ufeff\ufffe<>:") + [
               "<lora:", "lora", "ab", "fox", "1.5", "nan", "ｆｏｘ", "😀", "👨\u200d👩"]
prompts = st.one_of(
    st.none(),
    st.text(max_size=60),  # any Unicode but surrogates (which Discord's JSON cannot carry)
    st.lists(st.sampled_from(TROUBLE), max_size=40).map("".join),
    st.sampled_from(NASTY),
    st.integers(MAX_PROMPT_CHARS - 5, 200_000).map(lambda n: ("a " * n)[:n]),
)
numbers = st.one_of(st.none(), st.integers(-2**70, 2**70), st.integers(-3, 200),
                    st.floats(allow_nan=True, allow_infinity=True))
sizes = st.one_of(st.none(), st.text(max_size=16),
                  st.from_regex(r"-?[0-9０-９٠-٩]{0,9}[xX×*ｘ]-?[0-9０-９]{0,9}", fullmatch=True),
                  st.sampled_from(["64x64", "６４ｘ６４", "0x0", "1e3x512", "8x", "99999x99999"]))
models = st.one_of(st.none(), st.text(max_size=24),
                   st.sampled_from(["emoji-diffusion", "emoji-gan", "emoji-vae", "", " ", "..",
                                    "../../etc/passwd", "/etc/passwd", "/", "org/model",
                                    "a--b", "x.safetensors", "m\x1b[2J"]))
samplers = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(SAMPLER_NAMES))
loras = st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=8), numbers), max_size=3))
SHA = "ab" * 32


prompts_or_tame = st.one_of(st.sampled_from(["a red fox", "une forêt, 森林", "😀 cat"]), prompts)


def request(draw_value):
    """One random request: (builder name, keyword arguments). Up to three of its options
    are drawn from the hostile strategies; the rest have ordinary values (or are left
    out), so that requests get past the builders often enough to reach the gate."""
    kind = draw_value(st.sampled_from(["draw", "vary", "stylize", "blend", "upscale", "outpaint"]))
    tame: dict = {"model": None, "seed": None}
    wild: dict = {"model": models, "seed": numbers}
    if kind in ("draw", "vary"):
        tame.update(prompt="a red fox", negative_prompt="", steps=None, guidance=None, count=1,
                    sampler=None)
        wild.update(prompt=prompts, negative_prompt=prompts, steps=numbers, guidance=numbers,
                    count=numbers.filter(lambda x: x is not None), sampler=samplers)
    if kind == "draw":
        tame.update(size=None, loras=None)
        wild.update(size=sizes, loras=loras)
    elif kind == "vary":
        tame.update(strength=None, init_image_sha=SHA, init_size=(64, 64))
        wild.update(strength=numbers, init_size=st.tuples(st.integers(1, 20_000),
                                                          st.integers(1, 20_000)))
    elif kind == "stylize":
        tame.update(prompt=None, style_sha=SHA, method=None, size=None, steps=None,
                    strength=None, content_sha=SHA, content_size=(64, 48))
        wild.update(prompt=prompts, style_sha=st.sampled_from([None, SHA]),
                    method=st.one_of(st.none(), st.text(max_size=10),
                                     st.sampled_from(["gatys", "adain", "diffusion"])),
                    size=numbers, steps=numbers, strength=numbers)
    elif kind == "blend":
        tame.update(prompt="", size=None, image_shas=[SHA, SHA], sizes=[(64, 64)] * 2)
        wild.update(prompt=prompts, size=sizes,
                    image_shas=st.integers(0, 6).map(lambda n: [SHA] * n))
    elif kind == "upscale":
        tame = {"model": None, "scale": 2}
        wild = {"model": models, "scale": numbers}
    elif kind == "outpaint":
        tame = {"model": None, "zoom": 2.0, "pan": None}
        wild = {"model": models, "zoom": numbers,
                "pan": st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["left", "up"]))}
    options = dict(tame)
    if "prompt" in tame and tame["prompt"]:
        options["prompt"] = draw_value(prompts_or_tame) or ""
    for name in draw_value(st.sets(st.sampled_from(sorted(wild)), max_size=3)):
        value = draw_value(wild[name])
        options[name] = "" if value is None and name in ("prompt", "negative_prompt") \
            and kind != "stylize" else value
    if kind == "blend":
        options["sizes"] = [(64, 64)] * len(options["image_shas"])
    return kind, options


def build(settings: Settings, kind: str, options: dict) -> JobSpec:
    if kind in ("upscale", "outpaint"):
        parent = file_parent(settings, options.pop("model"))
        if kind == "upscale":
            return build_upscale(settings, parent, SHA, (64, 64), **options)
        return build_outpaint(settings, parent, SHA, (64, 64), **options)
    builder = {"draw": build_draw, "vary": build_vary, "stylize": build_stylize,
               "blend": build_blend}[kind]
    return builder(settings, **options)


def check_refusal(exc: UserError) -> None:
    message = exc.message
    assert message and message.strip() == message, repr(message)
    assert "\n" not in message and not has_controls(message), repr(message)


def check_spec(spec: JobSpec, settings: Settings) -> None:
    """What a job must hold to be stored and run: JSON without nan, whole numbers in
    range, a clean prompt."""
    json.dumps(spec.params, allow_nan=False)
    p = spec.params
    for key in ("prompt", "negative_prompt"):
        text = p.get(key, "")
        assert text == clean_prompt(text) and len(text) <= MAX_PROMPT_CHARS, repr(text)
        assert not text or has_visible(text)
    assert spec.seeds and all(type(s) is int and 0 <= s < SEED_LIMIT for s in spec.seeds)
    assert 1 <= len(spec.seeds) <= settings.max_count
    assert type(p["width"]) is int and type(p["height"]) is int
    assert 8 <= min(p["width"], p["height"])
    assert type(p["steps"]) is int and p["steps"] >= 1
    for key in ("guidance", "strength"):
        if key in p:
            assert math.isfinite(p[key])


def job_count(db_path) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        conn.close()


def test_builders_and_the_gate_refuse_cleanly_and_record_only_what_they_admit(tmp_path,
                                                                           monkeypatch):
    # No relative path a random model name could hit: the working directory is empty.
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", device="cpu", max_queued_per_user=10**6)
    db = open_db(settings.db_path)
    store = SettingsStore(db)
    change_setting(store, settings, SERVER, "blocklist", "nasty, /gr[o0]ss/", actor="test",
                   via="cli")
    change_setting(store, settings, SERVER, "daily_quota", "3", actor="test", via="cli")
    change_setting(store, settings, SERVER, "relax", "off", actor="test", via="cli")
    db.conn.close()
    loop = asyncio.new_event_loop()
    queue = loop.run_until_complete(LocalJobQueue(settings.db_path).open())
    seen = {"refused by a builder": 0, "refused by the gate": 0, "admitted": 0}

    @hypothesis_settings(max_examples=300, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data(), st.sampled_from([None, SERVER]), st.sampled_from(["1", "2", "3"]))
    def check(data, server, user):
        kind, options = request(data.draw)
        before = job_count(settings.db_path)
        try:
            spec = build(settings, kind, options)
        except UserError as exc:
            check_refusal(exc)
            seen["refused by a builder"] += 1
            assert job_count(settings.db_path) == before
            return
        check_spec(spec, settings)
        requester = Requester(user_id=user, source="discord" if server else "cli",
                              server_id=server, channel_id="7" if server else None)
        try:
            job = loop.run_until_complete(queue.submit(spec, requester=requester,
                                                       settings=settings))
        except UserError as exc:
            check_refusal(exc)
            seen["refused by the gate"] += 1
            assert job_count(settings.db_path) == before  # a refused request records nothing
            return
        seen["admitted"] += 1
        assert job_count(settings.db_path) == before + 1
        assert job.params["prompt"] == spec.params["prompt"]

    try:
        check()
    finally:
        loop.run_until_complete(queue.close())
        loop.close()
    # Each of the three outcomes happened, so none of the checks above went unused.
    assert all(seen.values()), seen
