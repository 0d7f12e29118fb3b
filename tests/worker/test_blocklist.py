"""The blocklist against disguised words (look-alike letters of other scripts, words
spelt apart), what it must still let through, and admins' regular expressions under
a time limit: matched directly, and through the gate on a real SQLite file."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from artbot.errors import InvalidRequest, Refusal
from storage.db import open_db
from storage.jobs import JobStore
from tests.worker.test_policy import GUILD, alice, rules_of, set_, submit
from worker.lookalikes import fold, latin_of, spelt_apart
from worker.prompts import Blocklist, Unchecked, entry_problem

WORDS = ("bad", "ass", "nasty", "sin", "gore*", "evil deed", "/b[l1]ood/", "血腥")


@pytest.fixture
def store(settings):
    return JobStore(open_db(settings.db_path))


# -- disguises that are refused ------------------------------------------------------------


@pytest.mark.parametrize("prompt, entry", [
    # look-alike letters of other scripts
    ("a b\u0430d dog", "bad"),              # Cyrillic а among Latin letters
    ("B\u0410D", "bad"),                    # Cyrillic capital А
    ("\u0412\u0410D", "bad"),               # Cyrillic В and А (the small в is no b)
    ("n\u03b1sty", "nasty"),                # Greek α
    ("na\u0455ty", "nasty"),                # Cyrillic ѕ (dze)
    ("a photo of \u0430\u0455\u0455", "ass"),   # wholly Cyrillic look-alikes in a Latin prompt
    ("\u0430\u0455\u0455", "ass"),          # ... and on their own
    ("S\u0406N", "sin"),                    # Cyrillic І stands for a capital I
    ("s\u0456n", "sin"),                    # and the small і for i
    ("\u0251ss", "ass"),                    # Latin alpha
    ("\U0001d41b\U0001d41a\U0001d41d", "bad"),   # mathematical bold
    ("\uff42\uff41\uff44", "bad"),          # full-width
    ("g\u043ere fest", "gore*"),            # a stem, with a Cyrillic о
    ("bl\u03bfod moon", "/b[l1]ood/"),      # a regular expression sees folded text too
    # spelt apart
    ("b a d", "bad"), ("b.a.d", "bad"), ("b-a-d", "bad"), ("b_a_d", "bad"), ("b*a*d", "bad"),
    ("B. A. D.", "bad"), ("b , a , d", "bad"), ("b~a~d", "bad"), ("b–a–d", "bad"),
    ("b-ad", "bad"), ("ba.d", "bad"),      # pieces glued by punctuation
    ("a b a d dog", "bad"),                 # an article spaced out with the letters
    ("n a s t y cat", "nasty"), ("N.A.S.T.Y.", "nasty"),
    ("e v i l d e e d", "evil deed"),        # two words spaced out
    ("g.o.r.e.f.e.s.t", "gore*"),
    ("b.l.o.o.d", "/b[l1]ood/"),
    ("血 腥", "血腥"),                       # characters of a script without spaces
    # both at once, and what `normalize` already saw through
    ("b \u0430 d", "bad"), ("b.\u0430.d", "bad"), ("\u0430.\u0455.\u0455", "ass"),
    ("b\u200ba\u200bd", "bad"), ("b.\u0430\u0301.d", "bad"),
])
def test_disguised_words_are_refused(prompt, entry):
    assert Blocklist(WORDS).match(prompt) == entry, prompt


def test_what_the_confusables_data_says():
    assert (latin_of("\u0430"), latin_of("\u0405"), latin_of("\u03bf"), latin_of("\u0251")) == (
        "a", "S", "o", "a")
    assert latin_of("a") is None and latin_of("\u0434") is None  # ASCII; Cyrillic д is like none
    # No Latin look-alike for Greek capital sigma (and the small σ looks like an o): a limit
    # of Unicode's data, written down so that a change to it is noticed.
    assert latin_of("\u03a3") is None and latin_of("\u03c3") == "o"


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefgxyz .,-_*\u0430\u03bf", max_size=30),
       st.text(alphabet="abcdefgxyz .,-_*\u0430\u03bf", max_size=30),
       st.sampled_from([" b.a.d ", " b a d ", " b-a-d ", " b\u0430d ", " B_A_D ", " \u0412\u0410D "]))
def test_a_disguised_word_is_refused_whatever_surrounds_it(before, after, word):
    assert Blocklist(WORDS).match(before + word + after) is not None


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_at_all_is_read_without_an_error(text):
    assert Blocklist(WORDS).match(text) in (None, *WORDS)


# -- what is not refused ------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [
    "class assignment", "a glass of water", "passing the grass", "a ss", "ba d", "b ad",
    "a badge", "baddie", "badminton", "a cassette", "embassy", "massive bass",
    "plan b a day", "vitamin b and d", "a b c", "sins", "basin", "casino night", "gory",
    "dynasty", "blooming", "b l u e", "a s-bend", "s.a.s. pilots",
    "J. R. R. Tolkien", "well-done steak", "x-ray of a hand", "t-shirt", "a.m. light",
])
def test_innocent_prompts_pass(prompt):
    assert Blocklist(WORDS).match(prompt) is None, prompt


@pytest.mark.parametrize("prompt, entry", [
    ("\u043a\u043e\u0442 \u043d\u0430 \u0441\u043e\u0440", "cop"),   # Russian 'кот на сор'
    ("\u0441\u043e\u0440 \u0438 \u0434\u043e\u043c", "cop"),         # 'сор и дом'
    ("\u03bf \u03ba\u03cc\u03c3\u03bc\u03bf\u03c2", "o"),             # Greek 'ο κόσμος'
    ("\u0440\u0430\u0441\u0430 \u0434\u0440\u0443\u0433", "paca"),   # 'раса друг'
])
def test_real_words_of_other_scripts_are_not_read_as_latin(prompt, entry):
    """A word of another script made only of Latin look-alikes stays itself when the
    prompt is written in that script: 'сор' in a Russian sentence is not 'cop'."""
    assert Blocklist((entry,)).match(prompt) is None


def test_fold_and_spelt_apart_say_what_they_read():
    assert fold("a photo of \u0430\u0455\u0455") == "a photo of ass"
    assert fold("\u043a\u043e\u0442 \u043d\u0430 \u0441\u043e\u0440") == "\u043a\u043e\u0442 \u043d\u0430 \u0441\u043e\u0440"
    assert fold("b\u0430d \u0434\u043e\u043c") == "bad \u0434\u043e\u043c"  # a mixed word is folded anywhere
    assert spelt_apart("a b.a.d dog, well-done") == ("abad dog, welldone", ["abad"])
    assert spelt_apart("class assignment") == ("class assignment", [])
    for text in ("满地是血的房间", "东京の夜", "\u03bf \u03ba\u03cc\u03c3\u03bc\u03bf\u03c2"):
        assert fold(text) == text  # scripts of their own are left as they are


def test_entries_in_other_scripts_still_match_their_own_script():
    words = Blocklist(("\u0441\u043e\u0440", "cop"))   # 'сор' and 'cop'
    assert words.match("\u043a\u043e\u0442 \u043d\u0430 \u0441\u043e\u0440") == "\u0441\u043e\u0440"
    assert words.match("a photo of \u0441\u043e\u0440") == "\u0441\u043e\u0440"
    assert words.match("a cop car") == "cop"


# -- through the gate ----------------------------------------------------------------------


def test_the_gate_refuses_disguises_and_records_nothing(store, settings):
    set_(store, settings, "blocklist", "nasty, bad, /b[l1]ood/")
    for prompt in ("a n\u0430sty cat", "a b.a.d dog", "a n a s t y cat", "b-l-o-o-d moon",
                   "\u0412\u0410D \u0441\u0430t", "\uff4e\uff41\uff53\uff54\uff59"):
        with pytest.raises(Refusal) as info:
            submit(store, settings, alice(), prompt=prompt)
        assert info.value.key == "blocked" and "does not allow that prompt" in info.value.message
    assert store.list_jobs(limit=10) == []
    for prompt in ("a badge on a class assignment", "a glass of water", "plan b a day",
                   "\u043a\u043e\u0442 \u043d\u0430 \u0441\u043e\u0440"):
        assert submit(store, settings, alice(), prompt=prompt).id
    assert len(store.list_jobs(limit=10)) == 4


# -- regular expressions under a time limit ------------------------------------------------


def test_a_catastrophic_regex_cannot_stall_the_check():
    words = Blocklist(("/(a+)+$/",))
    start = time.monotonic()
    with pytest.raises(Unchecked) as info:
        words.match("a" * 990 + "b")
    assert time.monotonic() - start < 1.0 and info.value.entry == "/(a+)+$/"
    assert words.match("a red fox") is None  # quick where it does not backtrack


def test_a_catastrophic_regex_in_the_database_is_refused_as_unchecked_and_logged(
        store, settings, caplog):
    # Set before regular expressions were checked when set: straight into the table.
    rules_of(store).set(GUILD, "blocklist", ["nasty", "/(a+)+$/"], actor="old", via="cli")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.policy"):
        with pytest.raises(Refusal) as info:
            submit(store, settings, alice(), prompt="a" * 990 + "b")
    assert time.monotonic() - start < 1.5
    assert info.value.key == "unchecked" and "could not be checked" in info.value.message
    assert "/(a+)+$/" in caplog.text and GUILD in caplog.text
    assert store.list_jobs(limit=10) == []
    assert submit(store, settings, alice(), prompt="a red fox").id  # other prompts go on


@pytest.mark.parametrize("value, message", [
    ("/(a+)+$/", "Blocklist entry /(a+)+$/ takes too long on a long prompt"),
    ("/(x+x+)+y/", "Blocklist entry /(x+x+)+y/ takes too long"),
    (r"/(\w+\s?)+$/", "takes too long"),
    ("/(a|aa)+$/", "takes too long"),
    ("/([a-z/", "Blocklist entry /([a-z/ is not a valid regular expression: "),
    ("/a{2,1}/", "not a valid regular expression"),
    ("/[z-a]/", "not a valid regular expression"),
    ("/a*/", "Blocklist entry /a*/ matches empty text, so it would block every prompt"),
    ("/^/", "matches empty text"), (r"/\b/", "matches empty text"),
    ("/" + "a" * 250 + "/", "is longer than 200 characters"),
    ("**", "empty once normalized"),
])
def test_bad_entries_are_refused_when_set_and_change_nothing(store, settings, value, message):
    set_(store, settings, "blocklist", "nasty")
    with pytest.raises(InvalidRequest) as info:
        set_(store, settings, "blocklist", "+" + value)
    assert message in info.value.message and len(info.value.message.splitlines()) == 1
    assert rules_of(store).values(GUILD)["blocklist"] == ["nasty"]
    assert len(rules_of(store).audit(GUILD)) == 1


def test_good_regexes_pass_the_probes_quickly():
    start = time.monotonic()
    for entry in ("/b[l1]ood/", r"/\bgor(e|y)\b/", "/^nsfw/", r"/(cat|dog)s?\s+fight/",
                  r"/\d{3}-\d{4}/", "/[a-z]+@[a-z]+/"):
        assert entry_problem(entry) is None, entry
    assert time.monotonic() - start < 1.0
