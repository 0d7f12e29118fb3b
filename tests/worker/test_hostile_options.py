"""Hostile and awkward options, each with the outcome it must get: through the `artbot`
command line (in-process, on a fresh data directory) and through the bot against the
Discord-protocol test server.

Every refusal is one clear line (`error: ...`, at most one more line saying where to
look), exit status 2 for a bad option (1 for a model that is not there), no
traceback, and nothing recorded: the jobs table (and the presets) are as they were.
"""

from __future__ import annotations

import io

import pytest
import pytest_asyncio
from PIL import Image

from artbot.config import Settings
from storage.db import open_db
from storage.images import ImageStore
from storage.jobs import JobStore
from tests.bot.discord_server import DiscordServer, running_client
from tests.bot.test_bot import make_bot
from tests.cli_runner import in_process_artbot, job_rows
from worker.requests import build_blend, build_draw, build_vary

ZW = "\u200b"  # zero-width space
RLO = "\u202e"  # right-to-left override
ESC = "\x1b"


def png(color=(200, 40, 40), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def artbot(tmp_path, monkeypatch, capsys):
    """`artbot(*argv)` in-process on a fresh data directory: (exit status, stdout, stderr).
    A parser error (argparse exits) counts as its exit status. Two images, a.png and
    b.png, are in the working directory; `artbot.finished_job()` stores a finished draw
    of one 64x64 image (no model runs) for the options that name a job."""
    data = tmp_path / "data"
    run = in_process_artbot(tmp_path, monkeypatch, capsys)
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png((20, 40, 200)))

    def finished_job() -> int:
        return finished_draw(Settings(data_dir=data, device="cpu"), None,
                             user_id="local:test", source="cli")

    run.finished_job = finished_job
    return run


def one_clear_line(err: str) -> str:
    """The error line of a refusal, checking it is all there is."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith("error: "), err
    assert len(lines) == 1 or lines[1].startswith("(see: "), err
    return lines[0]


# (argv, exit status, what the error line must say). "JOB" stands for a finished job's id.
CLI_CASES = {
    # prompts
    "prompt-empty": (["draw", ""], 2, "The prompt is empty: say what to draw."),
    "prompt-zero-width": (["draw", ZW * 5], 2, "The prompt has nothing visible in it"),
    "prompt-nul": (["draw", "\x00\x00\x00"], 2, "The prompt has nothing visible in it"),
    "prompt-white-space": (["draw", " \t\n\r  "], 2, "The prompt has nothing visible in it"),
    "prompt-combining-marks": (["draw", "\u0301\u0308\u20dd"], 2, "nothing visible"),
    "prompt-blank-letters": (["draw", "\u3164\u2800\u115f"], 2, "nothing visible"),
    "prompt-bidi-only": (["draw", RLO + "\u2066\u200f\u061c"], 2, "nothing visible"),
    "prompt-escape-only": (["draw", ESC + "\x07\x7f\x9b"], 2, "nothing visible"),
    "prompt-too-long": (["draw", "fox " * 251], 2,
                        "The prompt is longer than 1000 characters (1,003); shorten it."),
    "prompt-lone-surrogates": (["draw", "\ud800 \udfff\ufffe"], 2, "nothing visible"),
    "negative-too-long": (["draw", "a fox", "--negative", "blur" * 300], 2,
                          "The negative prompt is longer than 1000 characters"),
    "negative-invisible": (["draw", "a fox", "--negative", ZW + RLO], 2,
                           "The negative prompt has nothing visible in it"),
    "vary-prompt-invisible": (["vary", "a.png", "--prompt", "\x00" + ZW], 2,
                              "The prompt has nothing visible in it"),
    "stylize-prompt-invisible": (["stylize", "a.png", "--prompt", "\u200d\u200d"], 2,
                                 "The style prompt has nothing visible in it"),
    "blend-prompt-invisible": (["blend", "a.png", "b.png", "--prompt", RLO], 2,
                               "The prompt has nothing visible in it"),
    # numbers
    "guidance-nan": (["draw", "a fox", "--guidance", "nan"], 2, "Guidance must be a number, not nan."),
    "guidance-inf": (["draw", "a fox", "--guidance", "inf"], 2, "Guidance must be a number, not inf."),
    "guidance-overflow": (["draw", "a fox", "--guidance", "1e400"], 2, "must be a number, not inf"),
    "guidance-negative": (["draw", "a fox", "--guidance", "-1"], 2,
                          "Guidance must be between 0 and 30, not -1."),
    "guidance-words": (["draw", "a fox", "--guidance", "lots"], 2, "invalid float value: 'lots'"),
    "steps-zero": (["draw", "a fox", "--steps", "0"], 2, "argument --steps: must be 1 or more, not 0"),
    "steps-huge": (["draw", "a fox", "--steps", "9" * 28], 2,
                   "Steps must be between 1 and 150, not 1e+28."),
    "steps-fraction": (["draw", "a fox", "--steps", "1.5"], 2, "'1.5' is not a whole number"),
    "count-zero": (["draw", "a fox", "--count", "0"], 2, "argument --count: must be 1 or more, not 0"),
    "count-huge": (["draw", "a fox", "--count", "1000"], 2, "Count must be between 1 and 4, not 1000."),
    "seed-negative": (["draw", "a fox", "--seed", "-1"], 2, "argument --seed: must be 0 or more, not -1"),
    "seed-past-the-limit": (["draw", "a fox", "--seed", str(2**32)], 2,
                            "Seed 4294967296 is outside 0..4294967295."),
    "seed-hex": (["draw", "a fox", "--seed", "0x10"], 2, "'0x10' is not a whole number"),
    "seed-arabic-digits": (["draw", "a fox", "--seed", "٣"], 2, "is not a whole number"),
    "seed-thousands-of-digits": (["draw", "a fox", "--seed", "7" * 5000], 2, "is not a whole number"),
    # sizes
    "size-zero": (["draw", "a fox", "--size", "0x0"], 2, "Size 0x0 is outside 8..1536 pixels per side."),
    "size-negative": (["draw", "a fox", "--size=-8x8"], 2,
                      "Size '-8x8' is not WIDTHxHEIGHT, for example 512x512."),
    "size-half": (["draw", "a fox", "--size", "8x"], 2, "Size '8x' is not WIDTHxHEIGHT"),
    "size-exponent": (["draw", "a fox", "--size", "1e3x512"], 2, "Size '1e3x512' is not WIDTHxHEIGHT"),
    "size-eight-digits": (["draw", "a fox", "--size", "99999999x8"], 2, "is not WIDTHxHEIGHT"),
    "size-huge": (["draw", "a fox", "--size", "4096x4096"], 2, "Size 4096x4096 is outside 8..1536"),
    "size-arabic-digits": (["draw", "a fox", "--size", "٦٤x٦٤"], 2, "is not WIDTHxHEIGHT"),
    "size-escape": (["draw", "a fox", "--size", ESC + "[2J"], 2, "Size '\\x1b[2J' is not WIDTHxHEIGHT"),
    # samplers and LoRAs
    "sampler-unknown": (["draw", "a fox", "--sampler", "bogus"], 2, "Unknown sampler 'bogus'"),
    "sampler-huge": (["draw", "a fox", "--sampler", "x" * 5000], 2, "Unknown sampler 'xxxx"),
    "lora-weight-nan": (["draw", "a fox", "--lora", "film:nan"], 2,
                        "The weight of LoRA 'film' must be between -4 and 4, not nan."),
    "lora-weight-words": (["draw", "a fox", "--lora", "film:lots"], 2,
                          "must be a number such as 0.8, not 'lots'"),
    "lora-tag-weight-inf": (["draw", "<lora:film:inf> a fox"], 2, "must be between -4 and 4, not inf"),
    "lora-on-a-model-without": (["draw", "a fox", "--lora", "film"], 2, "cannot take LoRAs"),
    # models
    "model-empty": (["draw", "a fox", "--model", ""], 2, "The model name is empty"),
    "model-spaces": (["draw", "a fox", "--model", "   "], 2, "The model name is empty"),
    "model-traversal-to-a-file": (["draw", "a fox", "--model", "../" * 12 + "etc/passwd"], 1,
                                  "is a file but not a model"),
    "model-path-to-nothing": (["draw", "a fox", "--model", "./no/such/model"], 1,
                              "There is no model folder or file './no/such/model'"),
    "model-control-characters": (["draw", "a fox", "--model", f"sd{ESC}[2J"], 2,
                                 "The model name 'sd\\x1b[2J' has control characters in it"),
    "model-not-a-name": (["draw", "a fox", "--model", "my model!"], 1,
                         "Unknown model 'my model!'"),
    "model-too-long": (["draw", "a fox", "--model", "m" * 300], 2, "is too long to name a model"),
    # stylize and vary
    "stylize-strength-nan": (["stylize", "a.png", "--style", "b.png", "--strength", "nan"], 2,
                             "Strength must be a number, not nan."),
    "stylize-size-tiny": (["stylize", "a.png", "--style", "b.png", "--size", "8"], 2,
                          "Size must be between 32 and"),
    "stylize-size-zero": (["stylize", "a.png", "--style", "b.png", "--size", "0"], 2,
                          "argument --size: must be 1 or more, not 0"),
    "stylize-steps-huge": (["stylize", "a.png", "--style", "b.png", "--steps", "5000"], 2,
                           "Steps must be between 1 and 2000, not 5000."),
    "stylize-two-styles": (["stylize", "a.png", "--style", "b.png", "--prompt", "ink"], 2,
                           "Give exactly one of --style IMAGE, --preset NAME or --prompt TEXT."),
    "vary-strength-zero": (["vary", "a.png", "--strength", "0"], 2,
                           "Strength must be above 0 and at most 1, not 0."),
    "vary-strength-above-one": (["vary", "a.png", "--strength", "1.5"], 2, "at most 1, not 1.5"),
    "vary-strength-nan": (["vary", "a.png", "--strength", "nan"], 2, "Strength must be a number"),
    # jobs and images named by number
    "job-that-does-not-exist": (["upscale", "999"], 2, "There is no job 999 (see: artbot history)."),
    "job-id-past-sqlite": (["describe", "9" * 25], 2, "There is no job 9999999999999999999999999"),
    "image-zero": (["upscale", "JOB", "--image", "0"], 2, "argument --image: must be 1 or more, not 0"),
    "image-past-the-job": (["upscale", "JOB", "--image", "5"], 2,
                           "Job JOB has 1 image(s); --image takes 1..1."),
    "scale-three": (["upscale", "JOB", "--scale", "3"], 2, "invalid choice: 3 (choose from 2, 4)"),
    "zoom-by-three": (["zoom", "JOB", "--by", "3"], 2, "invalid choice: 3.0"),
    "pan-sideways": (["pan", "JOB", "sideways"], 2, "invalid choice: 'sideways'"),
    "cancel-job-zero": (["cancel", "0"], 2, "argument job_id: must be 1 or more, not 0"),
    "cancel-job-past-sqlite": (["cancel", "9" * 25], 2, "There is no job 9999999999999999999999999."),
    "blend-one-image": (["blend", "a.png"], 2, "Blend 2 to 5 images, not 1."),
    "history-limit-negative": (["history", "--limit", "-5"], 2,
                               "argument --limit: must be 1 or more, not -5"),
    "server-not-an-id": (["draw", "a fox", "--server", "my server"], 2,
                         "--server takes a Discord server id (digits), not 'my server'."),
    # preset names
    "preset-name-invisible": (["preset", "add", ZW + ZW, "a.png"], 2,
                              "A preset name needs something visible in it"),
    "preset-name-too-long": (["preset", "add", "p" * 41, "a.png"], 2,
                             "A preset name is at most 40 characters long."),
}


def test_there_are_at_least_forty_hostile_options():
    assert len(CLI_CASES) >= 40


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_a_hostile_option_gets_one_clear_line_and_records_nothing(artbot, case):
    argv, status, said = CLI_CASES[case]
    job = artbot.finished_job() if "JOB" in argv else None
    if job is not None:
        argv = [str(job) if a == "JOB" else a for a in argv]
        said = said.replace("JOB", str(job))
    before = job_rows(artbot.db)
    code, out, err = artbot(*argv)
    line = one_clear_line(err)
    assert said in line, line
    assert code == status, (code, line)
    assert job_rows(artbot.db) == before  # nothing queued, nothing changed
    code, out, _ = artbot("history")
    assert code == 0
    assert ("No jobs yet" in out) == (job is None)
    if argv[0] == "preset":
        assert "No presets" in artbot("preset", "list")[1]


def test_old_rows_with_control_characters_cannot_drive_the_terminal(artbot):
    """A prompt, a model name, a user name and an error stored raw (as rows written
    before prompts were cleaned hold them) are printed escaped by history and jobs."""
    artbot.db.parent.mkdir(parents=True)
    store = JobStore(open_db(artbot.db))
    raw = f"a fox{ESC}]0;owned\x07{RLO}txet{ESC}[2J\x00"
    for status in ("failed", "queued"):
        job = store.submit(user_id=f"local:{ESC}[8m", kind="draw", family="diffusion",
                           model=f"emoji{ESC}[31m", params={"prompt": raw}, seeds=[1],
                           batch_key="k", source="cli")
        if status == "failed":
            store.conn.execute("UPDATE jobs SET status = 'failed', error = ? WHERE id = ?",
                               (f"boom{ESC}[2J", job.id))
            store.conn.commit()
    store.conn.close()
    for command in ("history", "jobs"):
        code, out, err = artbot(command)
        assert code == 0, err
        assert not any(c in out for c in (ESC, RLO, "\x00", "\x07")), out
        assert "a fox\\x1b]0;owned\\x07\\u202etxet\\x1b[2J\\x00" in out
    code, out, _ = artbot("history")
    assert "emoji\\x1b[31m" in out and "boom\\x1b[2J" in out
    assert "local:\\x1b[8m" in artbot("jobs")[1]


def test_a_prompt_is_stored_clean_and_full_width_sizes_read_as_they_show(artbot):
    """Control and bidirectional characters go before the prompt is stored; white space
    becomes one space; full-width digits (as CJK input methods type them) are sizes."""
    settings = Settings(data_dir=artbot.db.parent, device="cpu")
    spec = build_draw(settings, prompt=f"  a\tred{ESC}[31m\n fox{RLO}\x00 👨\u200d👩\u200d👧 ",
                      negative_prompt="blur\u2066ry\r\n", size="６４ｘ６４")
    assert spec.params["prompt"] == "a red[31m fox 👨\u200d👩\u200d👧"
    assert spec.params["negative_prompt"] == "blurry"
    assert (spec.params["width"], spec.params["height"]) == (64, 64)
    vary = build_vary(settings, init_image_sha="0" * 64, init_size=(64, 64),
                      prompt=f"{RLO}bluer\x85")
    assert vary.params["prompt"] == "bluer"
    blend = build_blend(settings, image_shas=["0" * 64, "1" * 64], sizes=[(64, 64)] * 2,
                        prompt="\u2028two\u2029")
    assert blend.params["prompt"] == "two"


# -- the same through the bot, against the Discord-protocol server -----------------------


@pytest_asyncio.fixture
async def server():
    async with DiscordServer() as s:
        yield s


@pytest.fixture
def bot_settings(tmp_path) -> Settings:
    """A bot with the bundled default model and no worker: every case here is refused
    before anything would run."""
    return Settings(data_dir=tmp_path / "data", device="cpu", discord_token="test-token")


def finished_draw(settings: Settings, server_id: str | None, *, user_id: str = "1",
                  source: str = "discord") -> int:
    """A finished draw of one 64x64 image, stored as a worker would store it (no model
    runs): of this server on Discord, or (server None, source "cli") of the command line."""
    db = open_db(settings.db_path)
    store = JobStore(db)
    job = store.submit(user_id=user_id, kind="draw", family="pixel-diffusion", model="emoji-diffusion",
                       params={"prompt": "a red heart", "width": 64, "height": 64, "steps": 4,
                               "seed": 3, "count": 1},
                       seeds=[3], batch_key="k", source=source, server_id=server_id)
    (claimed,) = store.claim("test-worker", lease_s=60)
    image = ImageStore(settings.image_dir).put_image(Image.new("RGB", (64, 64), "red"))
    store.complete(claimed.id, claimed.claim_token, [(3, image)], model_revision=None,
                   run_seconds=0.1)
    db.conn.close()
    return job.id


# (command, options, attachments, what the private answer must say)
BOT_CASES = {
    "prompt-zero-width": ("draw", {"prompt": ZW * 3}, {}, "The prompt has nothing visible in it"),
    "prompt-nul": ("draw", {"prompt": "\x00\x00\x00"}, {}, "The prompt has nothing visible in it"),
    "negative-bidi-only": ("draw", {"prompt": "a fox", "negative": RLO + "\u2069"}, {},
                           "The negative prompt has nothing visible in it"),
    "size-zero": ("draw", {"prompt": "a fox", "size": "0x0"}, {}, "Size 0x0 is outside"),
    "size-arabic-digits": ("draw", {"prompt": "a fox", "size": "٦٤x٦٤"}, {},
                           "is not WIDTHxHEIGHT"),
    "lora-weight-nan": ("draw", {"prompt": "a fox", "lora": "film:nan"}, {},
                        "must be between -4 and 4, not nan"),
    "model-absolute-path": ("draw", {"prompt": "a fox", "model": "/etc/passwd"}, {},
                            "'/etc/passwd' is not one of this bot's models"),
    "model-traversal": ("draw", {"prompt": "a fox", "model": "../../../no/such"}, {},
                        "'../../../no/such' is not one of this bot's models"),
    "vary-job-that-does-not-exist": ("vary", {"job": "999"}, {}, "There is no job 999"),
    "vary-job-superscript-digit": ("vary", {"job": "²"}, {}, "There is no job ²"),
    "stylize-prompt-invisible": ("stylize", {"prompt": ZW}, {"image": png()},
                                 "The style prompt has nothing visible in it"),
    "blend-prompt-nul": ("blend", {"prompt": "\x00"}, {"image1": png(), "image2": png((0, 0, 9))},
                         "The prompt has nothing visible in it"),
}


@pytest.mark.asyncio
async def test_hostile_options_on_discord_get_a_private_line_and_record_nothing(server,
                                                                               bot_settings):
    job_id = finished_draw(bot_settings, str(server.guild.id))
    async with running_client(server, make_bot(bot_settings, run_worker=False)) as bot:
        for case, (command, options, files, said) in BOT_CASES.items():
            attachments = {k: (v, f"{k}.png", "image/png") for k, v in files.items()}
            ix = await server.slash_command(server.alice, server.general, command, options,
                                            attachments=attachments)
            data = (await ix.wait_response())["data"]
            assert data["flags"] & 64, case  # private
            assert said in data["content"], (case, data["content"])

        # An admin's preset needs a visible name too.
        ix = await server.slash_command(server.owner, server.general, "preset add",
                                        {"name": ZW + ZW},
                                        attachments={"image": (png(), "s.png", "image/png")})
        data = (await ix.wait_response())["data"]
        assert data["flags"] & 64 and "A preset name needs something visible" in data["content"]

        # A remix to a prompt of nothing visible, from the result's button and dialog.
        ix = await server.slash_command(server.alice, server.general, "job", {"id": job_id})
        shown = await ix.wait_original(lambda m: bool(m.buttons))
        remix = next(b["custom_id"] for b in shown.buttons if b["custom_id"].startswith("ab:remix"))
        ix = await server.press_button(server.alice, shown, remix)
        await ix.wait_response()
        submitted = await server.submit_modal(server.alice, ix, None,
                                              {"ab:remix-prompt": ZW + "\x00" + RLO})
        data = (await submitted.wait_response())["data"]
        assert data["flags"] & 64 and "The prompt has nothing visible in it" in data["content"]

        assert [j.id for j in await bot.queue.list_jobs()] == [job_id]  # nothing queued
        assert await bot.queue.presets(str(server.guild.id)) == []

        # What Discord itself refuses, it refuses by the limits the commands declare.
        options = {o["name"]: o for o in server.command("draw")["options"]}
        assert (options["steps"]["min_value"], options["steps"]["max_value"]) == \
            (1, bot_settings.max_steps)
        assert (options["count"]["min_value"], options["count"]["max_value"]) == \
            (1, bot_settings.max_count)
        assert (options["seed"]["min_value"], options["seed"]["max_value"]) == (0, 2**32 - 1)
        assert (options["guidance"]["min_value"], options["guidance"]["max_value"]) == (0, 30)
        assert options["negative"]["max_length"] == 1000
    server.assert_clean()
