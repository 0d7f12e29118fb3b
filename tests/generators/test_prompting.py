"""Weighted and long prompts: A1111's syntax read as A1111 reads it, a plain prompt
drawn exactly as the pipeline draws it, weights that change the picture, and
prompts that count past CLIP's 77 tokens. On the tiny SD 1.x and SDXL pipelines."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from artbot.errors import InvalidRequest
from generators.diffusion.loading import load_pipeline
from generators.diffusion.prompting import (
    a1111_fragments,
    a1111_to_compel,
    plain_text,
    prompt_embeddings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
CPU, F32 = torch.device("cpu"), torch.float32
W = 1.1  # what one pair of round brackets weighs

# About 105 tokens for the tiny byte-level tokenizer (one per letter), the last
# words well past token 77.
LONG = " ".join("abcdefghij"[i % 10] for i in range(100))


# -- A1111 syntax (no torch) --------------------------------------------------------


@pytest.mark.parametrize("prompt, chunks", [
    ("a red fox", [[("a red fox", 1.0)]]),
    ("a (red:1.3) fox", [[("a ", 1.0), ("red", 1.3), (" fox", 1.0)]]),
    ("(fox)", [[("fox", W)]]),
    ("((fox))", [[("fox", W * W)]]),
    ("[fox]", [[("fox", 1 / W)]]),
    ("((a) b:1.5)", [[("a", 1.5 * W), (" b", 1.5)]]),
    ("a (red:1.0) fox", [[("a red fox", 1.0)]]),  # weight 1 is no weight
    (r"a \(not\) weighted", [[("a (not) weighted", 1.0)]]),
    ("a (left open", [[("a ", 1.0), ("left open", W)]]),  # an open bracket weights the rest
    ("a ) stray", [[("a ) stray", 1.0)]]),  # a bracket never opened is text
    ("(x:abc)", [[("x:abc", W)]]),  # not a number: the colon is text
    ("(gone:-1)", [[("gone", 0.0)]]),
    ("C++ code, x- y", [[("C++ code, x- y", 1.0)]]),
    ("one BREAK two", [[("one", 1.0)], [("two", 1.0)]]),
    ("", [[("", 1.0)]]),
])
def test_a1111_syntax_is_read_as_a1111_reads_it(prompt, chunks):
    got = a1111_fragments(prompt)
    assert [[t for t, _ in c] for c in got] == [[t for t, _ in c] for c in chunks]
    assert [w for c in got for _, w in c] == pytest.approx([w for c in chunks for _, w in c])


def test_the_words_without_the_syntax():
    assert plain_text("a (red:1.3) fox in [snow] BREAK at night") == "a red fox in snow at night"


@pytest.mark.parametrize("prompt, spelled", [
    ("a (red fox:1.3) in [snow]", "a (red fox)1.3 in (snow)0.9091"),
    ("((fox))", "(fox)1.21"),
    (r"an \(aside\)", r"an \(aside\)"),
    ("one BREAK (two)", '("one", "(two)1.1").and()'),
    ('say "hi" (loud)', r'say \"hi\" (loud)1.1'),
])
def test_the_same_prompt_in_compels_syntax(prompt, spelled):
    assert a1111_to_compel(prompt) == spelled


def test_compel_reads_the_converted_prompt_with_the_same_weights():
    from compel import Compel

    prompt = "masterpiece, (a red fox:1.3) in [deep snow], (((night)))"
    (flat,) = Compel.parse_prompt_string(a1111_to_compel(prompt)).prompts
    ours = a1111_fragments(prompt)[0]
    assert [f.weight for f in flat.children] == pytest.approx([w for _, w in ours], abs=1e-4)
    # compel spaces punctuation its own way; the words are the same.
    assert [f.text.replace(" ", "") for f in flat.children] == [t.replace(" ", "") for t, _ in ours]
    one, two = Compel.parse_prompt_string(a1111_to_compel("one BREAK (two)")).prompts
    assert [(f.text, f.weight) for f in one.children + two.children] == [("one", 1.0), ("two", 1.1)]


def test_the_parser_loads_without_torch():
    code = ("import sys; from generators.diffusion.prompting import a1111_fragments; "
            "a1111_fragments('(a:1.2)'); assert 'torch' not in sys.modules, 'torch'; "
            "assert 'compel' not in sys.modules, 'compel'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- embeddings on the tiny pipelines -------------------------------------------------


@pytest.fixture(scope="module")
def sd1(tiny_pipeline):
    return load_pipeline(str(tiny_pipeline), CPU, F32)[0]


@pytest.fixture(scope="module")
def sdxl(tiny_models):
    return load_pipeline(str(tiny_models("sdxl")), CPU, F32)[0]


@pytest.fixture(params=["sd1", "sdxl"])
def pipe(request):
    return request.getfixturevalue(request.param)


def draw(pipe, **text) -> bytes:
    size = 48 if "XL" in type(pipe).__name__ else 32
    with torch.inference_mode():
        image = pipe(num_inference_steps=2, width=size, height=size,
                     generator=torch.Generator().manual_seed(7), **text).images[0]
    return image.tobytes()


def embedded(pipe, prompt, negative=None, **options) -> dict:
    return prompt_embeddings(pipe, [prompt], [negative] if negative else None, **options)


@pytest.mark.parametrize("negative", [None, "blurry cat"])
def test_a_plain_prompt_draws_exactly_what_the_pipeline_draws(pipe, negative):
    kwargs = embedded(pipe, "a red fox, in the snow", negative)
    assert draw(pipe, **kwargs) == draw(pipe, prompt="a red fox, in the snow", negative_prompt=negative)
    with torch.no_grad():
        if "XL" in type(pipe).__name__:
            own = pipe.encode_prompt("a red fox, in the snow", negative_prompt=negative, device=CPU)
            names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds"]  # no negative: SDXL's own zeros
        else:
            own = pipe.encode_prompt("a red fox, in the snow", CPU, 1, True, negative_prompt=negative)
            names = ["prompt_embeds", "negative_prompt_embeds"]
    assert list(kwargs) == names
    for name, tensor in zip(names, own):
        assert torch.equal(kwargs[name], tensor), name


def test_sdxl_pools_the_words_without_the_syntax(sdxl):
    with torch.no_grad():
        own = sdxl.encode_prompt("a red fox", device=CPU)
    assert torch.equal(embedded(sdxl, "a (red:1.3) fox")["pooled_prompt_embeds"], own[2])


def test_weights_change_the_image(pipe):
    plain = draw(pipe, prompt="a red fox")
    assert draw(pipe, **embedded(pipe, "a (red:1.0) fox")) == plain
    up = draw(pipe, **embedded(pipe, "a (red:1.5) fox"))
    down = draw(pipe, **embedded(pipe, "a [red] fox"))
    assert len({plain, up, down}) == 3
    assert draw(pipe, **embedded(pipe, "a red fox", "(blurry:1.4)")) != draw(
        pipe, prompt="a red fox", negative_prompt="blurry")
    # Brackets around nothing weigh nothing (compel cannot down-weight a fragment without tokens).
    assert torch.equal(embedded(pipe, "a [ ] fox")["prompt_embeds"], embedded(pipe, "a fox")["prompt_embeds"])


def test_a_long_prompt_is_read_past_token_77(pipe):
    cat, dog = LONG + ", a cat", LONG + ", a dog"
    assert len(pipe.tokenizer(cat).input_ids) > 100
    # The pipeline alone cuts both at 77 tokens: the same picture.
    assert draw(pipe, prompt=cat) == draw(pipe, prompt=dog)
    kwargs = embedded(pipe, cat, "ugly")
    assert kwargs["prompt_embeds"].shape[1] == kwargs["negative_prompt_embeds"].shape[1] == 154
    assert draw(pipe, **kwargs) != draw(pipe, **embedded(pipe, dog, "ugly"))


def test_break_starts_a_chunk_and_batches_share_one_length(sd1):
    assert embedded(sd1, "a red fox BREAK snow")["prompt_embeds"].shape[1] == 154
    kwargs = prompt_embeddings(sd1, ["a red fox", LONG], ["blurry"])
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape
    assert kwargs["prompt_embeds"].shape[:2] == (2, 154)


def test_clip_skip_reads_an_earlier_layer(sd1, sdxl):
    plain = draw(sd1, prompt="a red fox")
    skipped = embedded(sd1, "a red fox", clip_skip=1)
    assert draw(sd1, **skipped) != plain
    # What diffusers means by clip_skip=1 for SD: the penultimate layer, through the final norm.
    ids = sd1.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = sd1.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        norm = getattr(sd1.text_encoder, "text_model", sd1.text_encoder).final_layer_norm
        assert torch.equal(skipped["prompt_embeds"], norm(hidden))
    # SDXL's own clip_skip works on transformers 5 (SD 1.x's does not): ours matches it.
    assert draw(sdxl, **embedded(sdxl, "a red fox", clip_skip=1)) == draw(
        sdxl, prompt="a red fox", clip_skip=1)
    with pytest.raises(InvalidRequest, match="Clip skip 9 does not fit this model"):
        embedded(sd1, "a red fox", clip_skip=9)


def test_pipelines_without_clip_get_plain_prompts():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    assert prompt_embeddings(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()), ["a fox"], None) is None
