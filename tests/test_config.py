from pathlib import Path

import pytest

from artbot.config import ConfigError, load_settings


def test_defaults_then_file_then_environment(tmp_path):
    cfg = tmp_path / "artbot.toml"
    cfg.write_text('default_model = "from-file"\nmax_queued_per_user = 3\n[models]\nfox = "/m/fox"\n')
    s = load_settings({"ARTBOT_CONFIG": str(cfg), "ARTBOT_MAX_QUEUED_PER_USER": "7",
                       "ARTBOT_DATA_DIR": str(tmp_path / "d")})
    assert s.default_model == "from-file"
    assert s.max_queued_per_user == 7
    assert s.data_dir == tmp_path / "d"
    assert s.resolve_model("fox") == "/m/fox"
    assert s.resolve_model(None) == "from-file"
    assert load_settings({}).data_dir == Path("artbot-data")


def test_secrets_only_from_environment_and_never_shown(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('discord_token = "abc"\n')
    with pytest.raises(ConfigError, match="environment only"):
        load_settings({"ARTBOT_CONFIG": str(cfg)})
    s = load_settings({"DISCORD_TOKEN": "very-secret-token"})
    assert s.discord_token == "very-secret-token"
    assert "very-secret-token" not in repr(s)
    assert "very-secret-token" not in str(s.safe_dict())


def test_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="max_steps"):
        load_settings({"ARTBOT_MAX_STEPS": "lots"})
    cfg = tmp_path / "a.toml"
    cfg.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({"ARTBOT_CONFIG": str(cfg)})


def test_model_catalogue_tables_with_their_own_defaults(tmp_path):
    cfg = tmp_path / "artbot.toml"
    cfg.write_text(
        'lora_dir = "~/loras"\n'
        '[models]\nfox = "/m/fox"\n'
        '[models.juggernaut]\nsource = "/m/juggernautXL.safetensors"\nconfig = "/m/sdxl"\n'
        'description = "photographs"\nsampler = "DPM++ 2M Karras"\nguidance = 6\nsteps = 25\n'
        'loras = ["film"]\nclip_skip = 2\n')
    s = load_settings({"ARTBOT_CONFIG": str(cfg)})
    assert s.lora_dir == Path("~/loras").expanduser()
    assert s.resolve_model("juggernaut") == "/m/juggernautXL.safetensors"
    entry = s.model_entry("juggernaut")
    assert s.model_entry("/m/juggernautXL.safetensors") is entry  # a stored job names its source
    assert (entry.guidance, entry.steps, entry.loras, entry.clip_skip) == (6.0, 25, ["film"], 2)
    assert s.model_entry("fox").description == "" and s.model_name("/m/fox") == "fox"
    for bad, message in [('[models.x]\nconfig = "/c"\n', "source"),
                         ('[models.x]\nsource = "/s"\nstep = 4\n', "unknown key 'step'"),
                         ('[models.x]\nsource = "/s"\nsteps = "many"\n', "models.x.steps"),
                         ('[models.x]\nsource = "/s"\nloras = [1]\n', "models.x.loras")]:
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_settings({"ARTBOT_CONFIG": str(cfg)})
