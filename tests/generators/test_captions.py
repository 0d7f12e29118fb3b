"""From prompts to labels: on small hand-made captions, and on the real emoji
captions when the emoji set is in the cache (it is never fetched here)."""

from __future__ import annotations

import json

import pytest

from generators.captions import COLOURS, PromptIndex, colour_in, names_of, words_of

CAPTIONS = ["red circle", "blue circle, round", "green square", "red square, box", "red heart"]
LABELS = [0, 0, 1, 1, 2]


@pytest.fixture(scope="module")
def small() -> PromptIndex:
    return PromptIndex.build(CAPTIONS, LABELS, n_labels=4)


def test_words_are_lowercased_singular_and_without_stop_words():
    assert words_of("A Red Heart with the Flags of France!") == ["red", "heart", "flag", "france"]
    assert words_of("glass, bus, dress") == ["glass", "bus", "dress"]
    assert names_of("slice of pizza, pizza: hot") == ["slice pizza", "pizza", "hot"]


def test_the_best_matching_label_wins(small):
    assert small.label_for("a big circle", seed=0) == 0
    assert small.label_for("SQUARES", seed=0) == 1
    assert small.label_for("red heart", seed=0) == 2  # "heart" is rarer than "red"
    assert small.label_for("box", seed=0) == 1


def test_unknown_prompts_pick_a_seeded_label_among_those_with_captions(small):
    picks = [small.label_for("xyzzy", seed) for seed in range(40)]
    assert picks == [small.label_for("xyzzy", seed) for seed in range(40)]
    assert set(picks) == {0, 1, 2}  # label 3 has no captions
    assert small.label_for("", seed=5) in (0, 1, 2)


def test_round_trips_through_json(small):
    again = PromptIndex.from_dict(json.loads(json.dumps(small.to_dict())))
    assert again == small
    assert again.label_for("red heart", 0) == 2


def test_skin_tone_duplicates_count_once():
    index = PromptIndex.build(["man waving"] * 6 + ["waving hand"], [0] * 6 + [1], 2)
    assert index.words["waving"] == {0: 1, 1: 1}


# -- the emoji captions ---------------------------------------------------------------


def _emoji_cached() -> bool:
    from generators.datasets import EMOJI_PACKAGE, EMOJI_VERSION, cache_dir

    return (cache_dir() / f"{EMOJI_PACKAGE}-{EMOJI_VERSION}" / "package" / "emoji.json").is_file()


@pytest.fixture(scope="module")
def emoji():
    if not _emoji_cached():
        pytest.skip("the emoji set is not in the cache (artbot train fetches it with npm)")
    from generators.datasets import load_emoji

    data = load_emoji(16)  # the captions are what matter here; small images load faster
    index = PromptIndex.build(data.captions, data.sublabels.tolist(), len(data.sublabel_names))
    return index, data.sublabel_names


@pytest.mark.parametrize("prompt, expected", [
    ("red heart", {"heart"}),
    ("a red heart", {"heart"}),
    ("cat", {"animal-mammal"}),
    ("green apple", {"food-fruit"}),
    ("pizza", {"food-prepared"}),
    ("flag", {"country-flag"}),
    ("flag of japan", {"country-flag"}),
    ("smiling face", {"face-smiling", "face-affection"}),
    ("rocket", {"transport-air"}),
])
def test_emoji_prompts_find_their_subcategory(emoji, prompt, expected):
    index, names = emoji
    for seed in (0, 1, 2):
        assert names[index.label_for(prompt, seed)] in expected


def test_emoji_prompt_kinds(emoji):
    index, names = emoji
    assert names[index.label_for("a cute cat", 0)] in {"cat-face", "animal-mammal"}
    assert names[index.label_for("banana", 0)].startswith("food-")
    assert names[index.label_for("sad face", 0)].startswith("face-")


def test_emoji_index_is_small(emoji):
    index, _ = emoji
    assert len(json.dumps(index.to_dict())) < 200_000


def test_colour_words_win_then_the_named_emoji_then_the_label():
    # colours are indices in COLOURS: red 0, green 3, blue 4
    red, green, blue = COLOURS.index("red"), COLOURS.index("green"), COLOURS.index("blue")
    index = PromptIndex.build(CAPTIONS, LABELS, n_labels=4, colours=[red, blue, green, red, red])
    assert colour_in("a Blue thing") == blue and colour_in("grey or gray") == COLOURS.index("grey")
    assert colour_in("circle") is None
    assert all(index.colour_for("green circle", 0, seed) == green for seed in range(10))
    # "round" names only the blue circle; "box" only the red square
    assert all(index.colour_for("round", 0, seed) == blue for seed in range(10))
    assert all(index.colour_for("box", 1, seed) == red for seed in range(10))
    # otherwise the label's colours, as a seeded draw: both circles' colours turn up
    picks = [index.colour_for("circle thing", 0, seed) for seed in range(40)]
    assert set(picks) == {red, blue}
    assert picks == [index.colour_for("circle thing", 0, seed) for seed in range(40)]
    # a label with no captions falls back on any colour the data has
    assert index.colour_for("zzz", 3, 5) in {red, green, blue}
    again = PromptIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert again == index and again.to_dict()["colours"] == list(COLOURS)


def test_an_index_without_colours_keeps_its_old_form(small):
    assert "label_colours" not in small.to_dict()
    assert PromptIndex.from_dict(small.to_dict()).label_colours == []
