"""Requests built from a model's architecture profile, then the catalogue's
overrides, then the operator's and the server's limits; LoRAs named in the
prompt; what a model cannot do refused before anything is queued. No torch:
profiles are read from the models' files and names."""

from __future__ import annotations

import dataclasses
import time

import pytest

from artbot.config import ConfigError, ModelEntry
from artbot.errors import InvalidRequest, Refusal
from generators.diffusion import profiles
from storage.db import open_db
from storage.jobs import JobStore
from storage.settings import SettingsStore
from worker.gate import gate
from worker.policy import Policy, Requester, change_setting
from worker.requests import build_draw, build_reroll, build_vary, size_choices

GUILD = "111111111111"


def test_real_architectures_have_their_own_defaults_sizes_and_multiples(settings):
    cases = {
        "stable-diffusion-v1-5/stable-diffusion-v1-5": ("sd1", (512, 512), 30, 7.5, 8),
        "stabilityai/stable-diffusion-2-1-768": ("sd2-v", (768, 768), 30, 7.5, 8),
        "stabilityai/stable-diffusion-xl-base-1.0": ("sdxl", (1024, 1024), 30, 7.0, 8),
        "stabilityai/sdxl-turbo": ("sdxl", (1024, 1024), 4, 0.0, 8),
        "stabilityai/stable-diffusion-3.5-medium": ("sd3", (1024, 1024), 28, 7.0, 16),
        "black-forest-labs/FLUX.1-dev": ("flux-dev", (1024, 1024), 28, 3.5, 16),
        "black-forest-labs/FLUX.1-schnell": ("flux-schnell", (1024, 1024), 4, 0.0, 16),
        "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": ("pixart-sigma", (1024, 1024), 20, 4.5, 16),
    }
    for ref, (arch, native, steps, guidance, multiple) in cases.items():
        p = profiles.detect(ref)  # not in the cache here: from the name, and said so
        assert (p.arch, p.native, p.steps, p.guidance, p.multiple) == \
            (arch, native, steps, guidance, multiple), ref
        assert p.detected_from == "name"
    spec = build_draw(settings, prompt="a fox", model="stabilityai/stable-diffusion-xl-base-1.0")
    assert (spec.params["width"], spec.params["height"], spec.params["steps"]) == (1024, 1024, 30)
    with pytest.raises(InvalidRequest, match="not a multiple of 16.*try 992x992"):
        build_draw(settings, prompt="a fox", model="black-forest-labs/FLUX.1-dev", size="1000x1000")


def test_discord_offers_each_models_own_aspect_ratio_buckets(settings):
    sdxl = dict(size_choices(settings, "stabilityai/stable-diffusion-xl-base-1.0"))
    assert list(sdxl.values())[:3] == ["1024x1024", "1152x896", "896x1152"]
    assert sdxl["Landscape 1216×832 (19:13)"] == "1216x832"
    assert "1344x768" in sdxl.values()
    sd15 = [v for _, v in size_choices(settings, "stable-diffusion-v1-5/stable-diffusion-v1-5")]
    assert sd15[0] == "512x512" and "576x448" in sd15
    # A server's smaller max_size leaves out what it would refuse.
    small = [v for _, v in size_choices(dataclasses.replace(settings, max_size=1024),
                                        "stabilityai/stable-diffusion-xl-base-1.0")]
    assert small == ["1024x1024"]


def test_the_catalogue_overrides_the_architecture(settings, tiny_models):
    folder = str(tiny_models("sdxl"))
    settings.models = {"mine": ModelEntry(source=folder, steps=12, guidance=5.5, size="80x96",
                                          sampler="Euler a", description="tiny")}
    spec = build_draw(settings, prompt="a fox", model="mine")
    p = spec.params
    assert spec.model == folder
    assert (p["width"], p["height"], p["steps"], p["guidance"], p["sampler"]) == \
        (80, 96, 12, 5.5, "Euler a")
    # What the request says still wins; a reroll keeps what the job used.
    spec = build_draw(settings, prompt="a fox", model="mine", steps=3, sampler="DDIM")
    assert (spec.params["steps"], spec.params["sampler"]) == (3, "DDIM")
    settings.models["mine"] = ModelEntry(source=folder, arch="sdxl-turbo")
    with pytest.raises(ConfigError, match="arch 'sdxl-turbo' of mine is not one of sd1, sd2"):
        build_draw(settings, prompt="a fox", model="mine")
    settings.models["mine"] = ModelEntry(source=folder, distilled=True)
    spec = build_draw(settings, prompt="a fox", model="mine")
    assert (spec.params["steps"], spec.params["guidance"], spec.params["width"]) == (4, 0.0, 96)


def test_variations_keep_the_input_size_in_the_models_multiple(settings):
    flux = "black-forest-labs/FLUX.1-dev"
    spec = build_vary(settings, init_image_sha="ab" * 32, init_size=(96, 80), model=flux)
    assert (spec.params["width"], spec.params["height"]) == (96, 80)
    spec = build_vary(settings, init_image_sha="ab" * 32, init_size=(100, 70), model=flux)
    assert (spec.params["width"], spec.params["height"]) == (96, 64)  # down to multiples of 16
    with pytest.raises(InvalidRequest, match="PixArt-Σ has no image-to-image pipeline"):
        build_vary(settings, init_image_sha="ab" * 32, init_size=(96, 64),
                   model="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS")


def lora_settings(settings, tmp_path, *names):
    folder = tmp_path / "loras"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.safetensors").write_bytes(b"\x00")
    settings.lora_dir = folder
    return settings


def test_lora_tags_are_taken_out_of_the_prompt_and_stored(settings, tmp_path):
    lora_settings(settings, tmp_path, "film", "detail")
    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    spec = build_draw(settings, model=sd15,
                      prompt="a fox <lora:film:0.8>, in snow <LORA: detail >",
                      loras=[("film", 0.5)])
    assert spec.params["prompt"] == "a fox, in snow"
    assert spec.params["loras"] == [{"name": "film", "weight": 0.5}, {"name": "detail", "weight": 1.0}]
    assert '"loras"' in spec.batch_key and "film" in spec.batch_key
    plain = build_draw(settings, model=sd15, prompt="a fox, in snow")
    assert "loras" not in plain.params and plain.batch_key != spec.batch_key
    refusals = [
        ("a fox <lora:nope:1>", sd15, "No LoRA named 'nope'; LoRAs: detail, film."),
        ("a fox <lora:film:lots>", sd15, "must be a number such as 0.8, not 'lots'"),
        ("a fox <lora:film:9>", sd15, "between -4 and 4"),
        ("<lora:film:1>", sd15, "The prompt is empty"),
        ("a fox <lora:film:1>", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "cannot take LoRAs"),
        ("a fox <lora:film:1>", "emoji-diffusion", "cannot take LoRAs"),
    ]
    for prompt, model, message in refusals:
        with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(".", r"\.")):
            build_draw(settings, prompt=prompt, model=model)
    import torch
    from safetensors.torch import save_file

    # An SDXL LoRA (kohya names its second text encoder te2) on an SD 1.x model.
    save_file({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8)},
              settings.lora_dir / "xl-style.safetensors")
    with pytest.raises(InvalidRequest, match="'xl-style' was made for SDXL models; "
                                             "stable-diffusion-v1-5/stable-diffusion-v1-5 is "
                                             "Stable Diffusion 1.x"):
        build_draw(settings, prompt="a fox <lora:xl-style>", model=sd15)
    settings.models = {"photo": ModelEntry(source=sd15, loras=["detail"])}
    with pytest.raises(InvalidRequest, match="'film' is not meant for photo; with it: detail"):
        build_draw(settings, prompt="a fox <lora:film>", model="photo")


def test_a_reroll_keeps_the_loras(settings, tmp_path, job_store):
    lora_settings(settings, tmp_path, "film")
    spec = build_draw(settings, prompt="a fox <lora:film:0.7>",
                      model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    job = job_store.submit(user_id="u", kind=spec.kind, family=spec.family, model=spec.model,
                              params=spec.params, seeds=spec.seeds, batch_key=spec.batch_key,
                              source="cli")
    again = build_reroll(settings, job)
    assert again.params["loras"] == [{"name": "film", "weight": 0.7}]
    assert again.params["prompt"] == "a fox" and again.seeds != spec.seeds


def test_server_admins_choose_the_loras_members_may_use(settings, tmp_path):
    lora_settings(settings, tmp_path, "film", "detail")
    store = JobStore(open_db(settings.db_path))
    rules = SettingsStore(store.db)
    member = Requester(user_id="5", source="discord", server_id=GUILD, channel_id="7")

    def submit(prompt):
        here = Policy.load(rules, settings, GUILD, "7").apply(settings)
        spec = build_draw(here, prompt=prompt, model="stable-diffusion-v1-5/stable-diffusion-v1-5")
        return store.submit(user_id="5", kind=spec.kind, family=spec.family, model=spec.model,
                            params=spec.params, seeds=spec.seeds, batch_key=spec.batch_key,
                            source="discord", server_id=GUILD,
                            admit=gate(spec, member, settings, time.time))

    assert submit("a fox <lora:film>")
    with pytest.raises(InvalidRequest, match="Unknown LoRA 'grain'; LoRAs: detail, film"):
        change_setting(rules, settings, GUILD, "allowed_loras", "grain", actor="9", via="cli")
    change_setting(rules, settings, GUILD, "allowed_loras", "detail", actor="9", via="cli")
    with pytest.raises(Refusal, match="The LoRA film is not allowed here; allowed: detail"):
        submit("a fox <lora:film>")
    assert submit("a fox <lora:detail:0.6>")
    change_setting(rules, settings, GUILD, "allowed_loras", "none", actor="9", via="cli")
    with pytest.raises(Refusal, match="allowed: none"):
        submit("a fox <lora:detail>")
    assert submit("a fox")  # no LoRA: nothing to refuse
