"""The image tools on Discord (issue 16), end to end: the real discord.py client
against the Discord-protocol server in tests/bot/discord_server.py, with a real
worker in the bot drawing with the tiny random-weight SD pipeline and the bundled
emoji models on the CPU.

- Upscale ×2/×4, zoom out 1.5×/2× and pan ⬅️➡️⬆️⬇️ under a one-image result, only
  where the model can; each records its parent, works after a restart, and passes
  the one gate (here: the server's allowed models);
- /blend of uploads, /describe with a Draw button per prompt;
- /draw with a style reference;
- ✉️ sends the member a private message with the job's parameters (and says so
  plainly in the channel when their privacy settings refuse it).

Every test ends with `server.assert_clean()`."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageChops

from storage.db import open_db
from storage.jobs import JobStatus
from storage.settings import SettingsStore
from tests.bot.discord_server import running_client
from tests.bot.test_bot import RESULT_WAIT, draw, make_bot, newest_job, png_size, result
from worker.policy import change_setting

TOOL_IDS = ("ab:up2", "ab:up4", "ab:z15", "ab:z2", "ab:pl", "ab:pr", "ab:pu", "ab:pd")


def ids(message) -> list[str]:
    return [b["custom_id"] for b in message.buttons]


def png_image(message, index=0) -> Image.Image:
    with Image.open(io.BytesIO(message.attachment_bytes(index))) as im:
        return im.convert("RGB")


def png(colour, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


async def press(server, user, message, custom_id):
    ix = await server.press_button(user, message, custom_id)
    assert (await ix.wait_response())["type"] == 4
    return ix


def set_rule(settings, server, name, value):
    change_setting(SettingsStore(open_db(settings.db_path)), settings, str(server.guild.id),
                   name, value, actor="1", via="cli")


@pytest.mark.asyncio
async def test_upscale_zoom_and_pan_buttons_after_a_restart_record_parents_and_pass_the_gate(
        server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        await server.wait_for_commands("draw", "blend", "describe")
        first = await result(await draw(server, server.alice, seed=5))
        parent = await newest_job(bot)
    assert png_size(first) == (64, 64)
    buttons = ids(first)
    for prefix in TOOL_IDS:
        assert f"{prefix}:{parent.id}" in buttons
    # Midjourney-like rows: upscale and vary, zoom, pan, then reroll/remix/delete.
    rows = [[c["custom_id"].split(":")[1] for c in row["components"]]
            for row in first.payload["components"]]
    assert rows == [["up2", "up4", "vs", "vS"], ["z2", "z15"], ["pl", "pr", "pu", "pd"],
                    ["reroll", "remix", "del"]]
    original = png_image(first)

    # A new process: nothing in memory, only the database and the message on Discord.
    async with running_client(server, make_bot(bot_settings)) as bot:
        first = server.message(first.id)
        up = await result(await press(server, server.bob, first, f"ab:up2:{parent.id}"))
        job = await newest_job(bot)
        assert job.kind == "upscale" and job.parent_id == parent.id and job.seeds == [5]
        assert job.status is JobStatus.SUCCEEDED
        assert job.user_id == str(server.bob.id)  # whoever presses owns it
        assert png_size(up) == (128, 128)
        assert f"Upscaled ×2 from job {parent.id}" in up.content
        # Its own buttons: upscale again, zoom, pan; a remix of an upscale means nothing.
        assert f"ab:up2:{job.id}" in ids(up) and f"ab:z2:{job.id}" in ids(up)
        assert not any(i.startswith("ab:remix") for i in ids(up))

        zoomed = await result(await press(server, server.alice, first, f"ab:z2:{parent.id}"))
        job = await newest_job(bot)
        assert job.kind == "outpaint" and job.parent_id == parent.id
        assert png_size(zoomed) == (128, 128)
        assert f"Zoomed out 2× from job {parent.id}" in zoomed.content
        # The centre is the original, unchanged (the fill's feathering stays in the new border).
        centre = png_image(zoomed).crop((32, 32, 96, 96))
        assert ImageChops.difference(centre, original).getbbox() is None

        panned = await result(await press(server, server.alice, first, f"ab:pl:{parent.id}"))
        job = await newest_job(bot)
        assert job.kind == "outpaint" and job.params["options"]["pan"] == "left"
        assert png_size(panned) == (96, 64)  # wider, on the left
        assert ImageChops.difference(png_image(panned).crop((32, 0, 96, 64)),
                                     original).getbbox() is None
        assert "Panned ⬅️" in panned.content

        # The server now allows only emoji-diffusion: a zoom with the tiny model is refused,
        # privately, and nothing is queued.
        set_rule(bot_settings, server, "allowed_models", "emoji-diffusion")
        ix = await server.press_button(server.bob, first, f"ab:z15:{parent.id}")
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "not allowed" in answer["data"]["content"]
        assert (await newest_job(bot)).id == job.id
    server.assert_clean()


@pytest.mark.asyncio
async def test_describe_a_bundled_model_result_and_draw_one_of_its_prompts(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        emoji = await result(await draw(server, server.alice, "a smiling face", seed=3,
                                        model="emoji-diffusion"))
        source = await newest_job(bot)
        # emoji-diffusion has no image to image: no upscale, zoom or pan is offered.
        assert not any(i.startswith(TOOL_IDS) for i in ids(emoji))
        assert f"ab:reroll:{source.id}" in ids(emoji)

        ix = await server.slash_command(server.bob, server.general, "describe", {"job": str(source.id)})
        assert (await ix.wait_response())["type"] == 4
        described = await ix.wait_original(
            lambda m: any(b["custom_id"].startswith("ab:dd:") for b in m.buttons), timeout=RESULT_WAIT)
        job = await newest_job(bot)
        assert job.kind == "describe" and job.parent_id == source.id
        prompts = job.params["prompts"]
        assert 3 <= len(prompts) <= 4
        assert not described.attachments  # words, not an image
        for i, prompt in enumerate(prompts):
            assert prompt[:40] in described.content
            assert f"ab:dd:{job.id}:{i}" in ids(described)
        for note in job.params.get("notes", []):
            assert note[:40] in described.content

        drawn = await result(await press(server, server.alice, described, f"ab:dd:{job.id}:1"))
        child = await newest_job(bot)
        assert child.kind == "draw" and child.parent_id == job.id
        assert child.params["prompt"] == prompts[1]
        assert child.model == bot_settings.default_model  # the server's default model
        assert png_size(drawn) == (64, 64)
    server.assert_clean()


@pytest.mark.asyncio
async def test_blend_two_uploads_with_emoji_vae(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await server.slash_command(
            server.alice, server.general, "blend", {"model": "emoji-vae", "seed": 4},
            attachments={"image1": (png((220, 40, 40)), "red.png", "image/png"),
                         "image2": (png((40, 40, 220), (80, 80)), "blue.png", "image/png")})
        assert (await ix.wait_response())["type"] == 4
        blended = await result(ix)
        job = await newest_job(bot)
        assert job.kind == "blend" and job.family == "vae" and len(job.params["images"]) == 2
        assert job.user_id == str(server.alice.id) and job.seeds == [4]
        assert png_size(blended) == (64, 64)  # emoji-vae's own size
        assert "Blend of 2 images" in blended.content
        # The builder's rule, answered privately: one image is not a blend.
        ix = await server.slash_command(
            server.alice, server.general, "blend", {"model": "emoji-gan"},
            attachments={"image1": (png((1, 2, 3)), "a.png", "image/png"),
                         "image2": (png((3, 2, 1)), "b.png", "image/png")})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "cannot blend" in answer["data"]["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_draw_with_a_style_image_or_a_preset(server, bot_settings):
    async with running_client(server, make_bot(bot_settings, run_worker=False)) as bot:
        style = (png((10, 200, 10)), "green.png", "image/png")
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "a fox"},
                                        attachments={"style": style})
        assert (await ix.wait_response())["type"] == 4
        job = await newest_job(bot)
        assert job.params["style_image"] and job.params["options"]["style_method"] == "gatys"
        assert bot.images.by_sha(job.params["style_image"]).exists()

        ix = await server.slash_command(server.owner, server.general, "preset add",
                                        {"name": "green"}, attachments={"image": style})
        await ix.wait_response()
        ix = await server.slash_command(server.bob, server.general, "draw",
                                        {"prompt": "a fox", "style_preset": "green"})
        assert (await ix.wait_response())["type"] == 4
        assert (await newest_job(bot)).params["style_image"] == job.params["style_image"]

        ix = await server.slash_command(server.bob, server.general, "draw",
                                        {"prompt": "a fox", "style_preset": "green"},
                                        attachments={"style": style})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "not both" in answer["data"]["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_envelope_reaction_sends_the_jobs_details_privately(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        message = await result(await draw(server, server.alice, seed=77, sampler="Euler a"))
        job = await newest_job(bot)
        await server.add_reaction(server.bob, message, "✉️")
        await server.wait_for(lambda: server.dms_to(server.bob), 5, "a private message")
        (dm,) = server.dms_to(server.bob)
        assert "guild_id" not in dm.payload
        text = dm.content
        assert f"Job {job.id}" in text and "77" in text and "Euler a" in text
        assert job.model in text and '"prompt": "a red fox"' in text and '"steps": 4' in text
        assert f"/{server.general.id}/{message.id}" in text  # a link back to the result
        assert not server.dms_to(server.alice)  # only whoever reacted gets one

        # Alice accepts no private messages: Discord refuses (50007); she is told plainly.
        server.close_dms(server.alice)
        await server.add_reaction(server.alice, message, "✉️")
        told = await server.wait_for_message(
            channel_id=server.general.id,
            predicate=lambda m: "private messages" in (m.content or ""), timeout=5)
        assert f"<@{server.alice.id}>" in told.content and f"/job {job.id}" in told.content
        await asyncio.sleep(0.1)
        assert not server.dms_to(server.alice)
    server.assert_clean(allow_codes=(50007,))
