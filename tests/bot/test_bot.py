"""artbot's Discord bot end to end: the real discord.py client against the
Discord-protocol server in tests/bot/discord_server.py, with the tiny
random-weight diffusion model and a real worker in the same process.

Every test ends with `server.assert_clean()`: every request the bot made had
a body that fits Discord's OpenAPI description and got no Discord error
(except those a test provokes on purpose)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.client import ArtBot
from storage.jobs import JobStatus
from tests.bot.discord_server import running_client

RESULT_WAIT = 30.0


def make_bot(settings, **kw) -> ArtBot:
    return ArtBot(settings, guild_ready_timeout=0.05, **kw)


def has_image(message) -> bool:
    """The result is shown: a PNG with buttons (a preview of the image forming, with
    the Cancel button, is a JPEG)."""
    return any(a["filename"].endswith(".png") for a in message.attachments) and bool(message.buttons)


def png_size(message, index=0) -> tuple[int, int]:
    with Image.open(io.BytesIO(message.attachment_bytes(index))) as im:
        assert im.format == "PNG"
        return im.size


async def draw(server, user, prompt="a red fox", **options):
    ix = await server.slash_command(user, server.general, "draw", {"prompt": prompt, **options})
    response = await ix.wait_response()
    assert response["type"] == 4, response  # answered at once, with the queue position
    return ix


async def result(ix):
    return await ix.wait_original(has_image, timeout=RESULT_WAIT)


def button(message, prefix):
    return next(b["custom_id"] for b in message.buttons if b["custom_id"].startswith(prefix))


async def newest_job(bot):
    (job,) = await bot.queue.list_jobs(limit=1)
    return job


@pytest.mark.asyncio
async def test_draw_answers_at_once_then_shows_png_with_seed_and_buttons(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        await server.wait_for_commands("draw", "vary", "history", "job", "queue", "help")
        ix = await draw(server, server.alice, seed=7)
        assert "Queued" in ix.callback["data"]["content"] or "position" in ix.callback["data"]["content"]
        message = await result(ix)
        assert png_size(message) == (64, 64)
        embed = message.embeds[0]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Seed"] == "7"
        assert embed["image"]["url"].startswith("attachment://") or "artbot-" in embed["image"]["url"]
        job = await newest_job(bot)
        assert job.status is JobStatus.SUCCEEDED and job.seeds == [7]
        assert {button(message, "ab:reroll"), button(message, "ab:del")} == {
            f"ab:reroll:{job.id}", f"ab:del:{job.id}"}
        labels = {b.get("label") for b in message.buttons}
        assert {"Reroll", "Vary (subtle)", "Vary (strong)", "Remix", "Delete"} <= labels
    server.assert_clean()


@pytest.mark.asyncio
async def test_reroll_button_makes_a_new_job_with_a_new_seed(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        first = await result(await draw(server, server.alice, seed=7))
        parent = await newest_job(bot)
        ix = await server.press_button(server.bob, first, button(first, "ab:reroll"))
        assert (await ix.wait_response())["type"] == 4
        rerolled = await result(ix)
        child = await newest_job(bot)
        assert child.id != parent.id and child.parent_id == parent.id
        assert child.seeds != [7] and child.params["prompt"] == "a red fox"
        assert child.user_id == str(server.bob.id)  # whoever presses owns the new job
        assert png_size(rerolled) == (64, 64)
    server.assert_clean()


@pytest.mark.asyncio
async def test_dice_reaction_makes_a_variation_linked_to_its_parent(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        first = await result(await draw(server, server.alice, seed=3))
        parent = await newest_job(bot)
        await server.add_reaction(server.alice, first, "🎲")
        reply = await server.wait_for_message(
            channel_id=server.general.id,
            predicate=lambda m: m.id != first.id and has_image(m), timeout=RESULT_WAIT)
        child = await newest_job(bot)
        assert child.kind == "vary" and child.parent_id == parent.id
        assert child.params["strength"] == 0.35
        assert png_size(reply) == (64, 64)
        assert reply.payload.get("message_reference", {}).get("message_id") == str(first.id)
    server.assert_clean()


@pytest.mark.asyncio
async def test_delete_is_refused_to_others_and_allowed_to_the_owner(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)):
        message = await result(await draw(server, server.alice))
        ix = await server.press_button(server.bob, message, button(message, "ab:del"))
        answer = await ix.wait_response()
        assert answer["type"] == 4 and answer["data"]["flags"] & 64  # only Bob sees it
        assert "Only the person" in answer["data"]["content"]
        assert not server.message(message.id).deleted
        # A 🗑️ reaction from Bob is ignored too.
        await server.add_reaction(server.bob, message, "🗑️")
        await asyncio.sleep(0.3)
        assert not server.message(message.id).deleted
        ix = await server.press_button(server.alice, message, button(message, "ab:del"))
        await ix.wait_response()
        await server.wait_for(lambda: server.message(message.id).deleted, 5, "deletion")
    server.assert_clean()


@pytest.mark.asyncio
async def test_buttons_on_an_old_result_work_after_a_restart(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)):
        old = await result(await draw(server, server.alice, seed=11))
    # A new process: nothing in memory, only the database and the message on Discord.
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await server.press_button(server.alice, server.message(old.id), button(old, "ab:reroll"))
        await result(ix)
        child = await newest_job(bot)
        assert child.parent_id is not None and child.status is JobStatus.SUCCEEDED
        await server.add_reaction(server.bob, server.message(old.id), "🔁")
        await server.wait_for_message(
            channel_id=server.general.id,
            predicate=lambda m: has_image(m) and m.id not in (old.id, ix.original_id),
            timeout=RESULT_WAIT)
    server.assert_clean()


@pytest.mark.asyncio
async def test_result_after_the_token_expired_goes_to_the_channel_with_a_mention(server, bot_settings):
    from worker.runner import Worker

    async with running_client(server, make_bot(bot_settings, run_worker=False)) as bot:
        ix = await draw(server, server.alice, seed=5)
        job = await newest_job(bot)
        while (await bot.queue.get(job.id)).message_id is None:  # the command has finished
            await asyncio.sleep(0.02)
        server.expire_interaction(ix)  # 15 minutes pass before a worker gets to it
        worker = Worker(bot.queue, bot.images, bot_settings)
        await worker.run(burst=True)
        late = await server.wait_for_message(channel_id=server.general.id,
                                             predicate=has_image, timeout=RESULT_WAIT)
        assert f"<@{server.alice.id}>" in late.content
        assert str(server.alice.id) in [u["id"] for u in late.payload["mentions"]]
        assert png_size(late) == (64, 64)
        for _ in range(100):
            if (await bot.queue.get(job.id)).delivered_at is not None:
                break
            await asyncio.sleep(0.05)
        assert (await bot.queue.get(job.id)).delivered_at is not None
        # Its buttons work like any other result's.
        again = await server.press_button(server.bob, late, button(late, "ab:reroll"))
        await again.wait_response()
    server.assert_clean(allow_codes=(10015,))  # the expired token was refused, as on Discord


@pytest.mark.asyncio
async def test_a_429_from_discord_is_retried_and_nothing_is_lost(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)):
        server.inject_rate_limit("PATCH", r"/webhooks/.*/messages/", count=2, retry_after=0.3)
        message = await result(await draw(server, server.alice, seed=9))
        assert png_size(message) == (64, 64)
        assert len(server.rate_limit_hits) == 2
    server.assert_clean()


@pytest.mark.asyncio
async def test_vary_refuses_a_non_image_privately_and_records_nothing(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await server.slash_command(server.alice, server.general, "vary", {},
                                        attachments={"image": (b"hello", "notes.txt", "text/plain")})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "not an image" in answer["data"]["content"]
        ix = await server.slash_command(server.alice, server.general, "vary", {},
                                        attachments={"image": (b"\x89PNG broken", "fake.png",
                                                               "image/png")})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "not an image" in answer["data"]["content"]
        assert await bot.queue.list_jobs() == []
    server.assert_clean()


@pytest.mark.asyncio
async def test_vary_an_upload_and_an_earlier_job(server, bot_settings):
    buf = io.BytesIO()
    Image.new("RGB", (80, 56), (200, 30, 30)).save(buf, format="PNG")
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await server.slash_command(server.alice, server.general, "vary",
                                        {"strength": "strong", "prompt": "redder"},
                                        attachments={"image": (buf.getvalue(), "red.png", "image/png")})
        message = await result(ix)
        assert png_size(message) == (80, 56)
        upload_job = await newest_job(bot)
        assert upload_job.params["strength"] == 0.7 and upload_job.params["prompt"] == "redder"
        ix = await server.slash_command(server.alice, server.general, "vary", {"job": str(upload_job.id)})
        await result(ix)
        assert (await newest_job(bot)).parent_id == upload_job.id
    server.assert_clean()


@pytest.mark.asyncio
async def test_grid_with_u_and_v_buttons_and_remix(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        grid = await result(await draw(server, server.alice, count=4, seed=20))
        assert png_size(grid) == (128, 128)  # 2x2 of 64x64
        job = await newest_job(bot)
        assert job.seeds == [20, 21, 22, 23]
        labels = [b.get("label") for b in grid.buttons]
        assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]

        ix = await server.press_button(server.alice, grid, f"ab:u:{job.id}:1")
        single = await ix.wait_original(has_image)
        assert png_size(single) == (64, 64)
        assert "21" in [f["value"] for f in single.embeds[0]["fields"]]

        ix = await server.press_button(server.alice, grid, f"ab:v:{job.id}:2")
        await result(ix)
        varied = await newest_job(bot)
        assert varied.kind == "vary" and varied.parent_id == job.id

        ix = await server.press_button(server.alice, single, button(single, "ab:remix"))
        await ix.wait_response()
        assert ix.modal is not None
        submitted = await server.submit_modal(server.alice, ix, None, {"ab:remix-prompt": "a blue fox"})
        await result(submitted)
        remixed = await newest_job(bot)
        assert remixed.params["prompt"] == "a blue fox" and remixed.parent_id == job.id
    server.assert_clean()


@pytest.mark.asyncio
async def test_history_job_queue_and_help(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        await result(await draw(server, server.alice, "first fox", seed=1))
        await result(await draw(server, server.alice, "second fox", seed=2))
        job = await newest_job(bot)

        ix = await server.slash_command(server.alice, server.general, "history", {})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64
        text = answer["data"]["embeds"][0]["description"]
        assert "second fox" in text and "first fox" in text and "seed 2" in text
        assert f"https://discord.com/channels/{server.guild.id}/" in text

        ix = await server.slash_command(server.bob, server.general, "job", {"id": job.id})
        shown = await ix.wait_original(has_image)
        assert png_size(shown) == (64, 64)
        assert button(shown, "ab:reroll") == f"ab:reroll:{job.id}"

        ix = await server.slash_command(server.alice, server.general, "queue", {})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64
        ix = await server.slash_command(server.alice, server.general, "help", {})
        assert "/draw" in (await ix.wait_response())["data"]["embeds"][0]["description"]

        ix = await server.slash_command(server.alice, server.general, "job", {"id": 999})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "no job 999" in answer["data"]["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_user_mistakes_get_private_answers(server, bot_settings):
    bot_settings.max_queued_per_user = 1
    async with running_client(server, make_bot(bot_settings, run_worker=False)) as bot:
        await draw(server, server.alice)
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "again"})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "limit is 1" in answer["data"]["content"]
        ix = await server.slash_command(server.bob, server.general, "vary", {})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "Give an image" in answer["data"]["content"]
        assert len(await bot.queue.list_jobs()) == 1
    server.assert_clean()


@pytest.mark.asyncio
async def test_progress_edits_at_most_once_per_one_and_a_half_seconds(server, bot_settings):
    bot_settings.models["tiny"].steps = 60
    async with running_client(server, make_bot(bot_settings)):
        ix = await draw(server, server.alice)
        message = await ix.wait_original(has_image, timeout=60)
        times = server.message(message.id).edit_times
        assert len(times) >= 2
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) >= 1.45, gaps
        contents = [e.payload["content"] for e in server.message(message.id).edits]
        assert any("step" in c for c in contents)
    server.assert_clean()


@pytest.mark.asyncio
async def test_chinese_clients_see_chinese(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)):
        draw_cmd = server.command("draw")
        assert draw_cmd["name_localizations"]["zh-CN"] == "画图"
        assert draw_cmd["description_localizations"]["zh-CN"] == "根据文字描述画图"
        prompt_opt = next(o for o in draw_cmd["options"] if o["name"] == "prompt")
        assert prompt_opt["name_localizations"]["zh-CN"] == "提示词"
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "狐狸"},
                                        locale="zh-CN")
        assert "排队" in (await ix.wait_response())["data"]["content"]
        message = await result(ix)
        assert "重画" in [b.get("label") for b in message.buttons]
    server.assert_clean()


@pytest.mark.asyncio
async def test_dev_guild_sync_puts_commands_on_that_server_only(server, bot_settings):
    bot_settings.discord_dev_guild = server.guild.id
    async with running_client(server, make_bot(bot_settings)):
        await server.wait_for_commands("draw", "help", guild_id=server.guild.id)
        assert server.commands() == []  # nothing global
        await result(await draw(server, server.alice))
    server.assert_clean()


@pytest.mark.asyncio
async def test_stopping_mid_job_loses_nothing(server, bot_settings):
    bot_settings.models["tiny"].steps = 150
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await draw(server, server.alice, seed=4)
        job = await newest_job(bot)
        for _ in range(400):
            current = await bot.queue.get(job.id)
            if current.status is JobStatus.RUNNING and (current.progress_step or 0) >= 1:
                break
            await asyncio.sleep(0.05)
        assert current.status is JobStatus.RUNNING
    # The bot stopped the way SIGTERM stops it (ArtBot.close): the job went back on the queue.
    from storage.db import open_db
    from storage.jobs import JobStore

    assert JobStore(open_db(bot_settings.db_path)).get(job.id).status is JobStatus.QUEUED
    bot_settings.models["tiny"].steps = 4
    async with running_client(server, make_bot(bot_settings)) as bot:
        message = await ix.wait_original(has_image, timeout=120)
        done = await bot.queue.get(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.seeds == [4]
        assert len(await bot.queue.images(job.id)) == 1
    server.assert_clean()


@pytest.mark.asyncio
async def test_history_pages_with_buttons(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        for i in range(6):
            await result(await draw(server, server.alice, f"fox number {i}", seed=i))
        ix = await server.slash_command(server.alice, server.general, "history", {})
        await ix.wait_response()
        first = ix.original
        assert "fox number 5" in first.embeds[0]["description"]
        assert "fox number 0" not in first.embeds[0]["description"]
        next_id = next(b["custom_id"] for b in first.buttons if b.get("label") == "Next")
        page2 = await server.press_button(server.alice, first, next_id)
        await page2.wait_response()
        await server.wait_for(lambda: "fox number 0" in server.message(first.id).embeds[0]["description"],
                              5, "page 2")
        # Another member sees only their own (empty) history by default, and no other server's.
        ix = await server.slash_command(server.bob, server.general, "history", {})
        assert "No images yet" in (await ix.wait_response())["data"]["embeds"][0]["description"]
    server.assert_clean()


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.asyncio
async def test_stylize_with_an_attachment_and_with_an_admins_preset(server, bot_settings):
    from tests.generators.style_images import house_scene, stripes

    content = ("content", (png_bytes(house_scene(64)), "house.png", "image/png"))
    style = (png_bytes(stripes(64)), "stripes.png", "image/png")
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await server.slash_command(server.alice, server.general, "stylize",
                                        {"size": 48}, attachments={"image": content[1], "style": style})
        message = await ix.wait_original(lambda m: bool(m.attachments), timeout=120)
        assert png_size(message) == (48, 48)
        job = await newest_job(bot)
        assert job.kind == "stylize" and job.params["options"]["method"] == "gatys"
        assert [b.get("label") for b in message.buttons] == ["Delete"]

        # A member without Manage Server cannot save presets; the owner can.
        ix = await server.slash_command(server.bob, server.general, "preset add", {"name": "stripes"},
                                        attachments={"image": style})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "manage this server" in answer["data"]["content"]
        ix = await server.slash_command(server.owner, server.general, "preset add", {"name": "stripes"},
                                        attachments={"image": style})
        assert "saved" in (await ix.wait_response())["data"]["content"]
        ix = await server.slash_command(server.bob, server.general, "stylize",
                                        {"preset": "stripes", "size": 40},
                                        attachments={"image": content[1]})
        message = await ix.wait_original(lambda m: bool(m.attachments), timeout=120)
        assert png_size(message) == (40, 40)
        assert (await newest_job(bot)).params["preset"] == "stripes"

        ix = await server.slash_command(server.bob, server.general, "stylize",
                                        {"preset": "stripes", "prompt": "oil paint"},
                                        attachments={"image": content[1]})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "one style" in answer["data"]["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_draw_with_a_sampler_shows_it_and_rerolls_keep_it(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        message = await result(await draw(server, server.alice, seed=7, sampler="Euler a"))
        job = await newest_job(bot)
        assert job.params["sampler"] == "Euler a"
        fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
        assert fields["Sampler"] == "Euler a"
        ix = await server.press_button(server.bob, message, button(message, "ab:reroll"))
        await result(ix)
        assert (await newest_job(bot)).params["sampler"] == "Euler a"
    server.assert_clean()


@pytest.mark.asyncio
async def test_draw_offers_each_models_sizes_and_takes_guidance_and_a_lora(server, bot_settings,
                                                                          tiny_models, tmp_path):
    """size: autocompletes the chosen model's aspect-ratio buckets; model: shows the
    catalogue's description; guidance and lora: reach the job and show on the result."""
    from generators.diffusion.tiny_lora import build_tiny_lora

    bot_settings.lora_dir = tmp_path / "loras"
    build_tiny_lora(bot_settings.default_model, bot_settings.lora_dir / "grain.safetensors")
    bot_settings.models["xl"] = {"source": str(tiny_models("sdxl")), "description": "tiny SDXL"}
    bot_settings.models["tiny"].description = "the test model"
    bot_settings.__post_init__()  # (a table given after start-up becomes a ModelEntry)
    async with running_client(server, make_bot(bot_settings)) as bot:
        models = await server.autocomplete(server.alice, server.general, "draw",
                                           {"prompt": "a fox", "model": "x"}, focused="model")
        assert {"name": "xl · tiny SDXL", "value": "xl"} in models
        sizes = await server.autocomplete(server.alice, server.general, "draw",
                                          {"prompt": "a fox", "model": "xl", "size": ""},
                                          focused="size")
        assert sizes[0] == {"name": "Square 96×96", "value": "96x96"}
        assert {"name": "Landscape 128×72 (16:9)", "value": "128x72"} in sizes
        default = await server.autocomplete(server.alice, server.general, "draw",
                                            {"prompt": "a fox", "size": "64"}, focused="size")
        assert default[1] == {"name": "Square 64×64", "value": "64x64"}  # the tiny SD's own
        loras = await server.autocomplete(server.alice, server.general, "draw",
                                          {"prompt": "a fox", "lora": "gr:0.6"}, focused="lora")
        assert loras == [{"name": "grain:0.6", "value": "grain:0.6"}]
        message = await result(await draw(server, server.alice, seed=3, guidance=4.5,
                                          lora="grain:0.6", size="64x56"))
        job = await newest_job(bot)
        assert job.params["guidance"] == 4.5 and (job.params["width"], job.params["height"]) == (64, 56)
        assert job.params["loras"] == [{"name": "grain", "weight": 0.6}]
        fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
        assert fields["Guidance"] == "4.5" and fields["LoRAs"] == "grain:0.6"
        ix = await server.slash_command(server.alice, server.general, "draw",
                                        {"prompt": "a fox", "model": "xl", "size": "100x100"})
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "not a multiple of 8" in answer["data"]["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_cancel_button_reaction_and_queue_cancel_stop_jobs_and_free_the_quota(
        server, bot_settings):
    from storage.db import open_db
    from storage.settings import SettingsStore
    from worker.policy import change_setting

    guild = str(server.guild.id)
    for key, value in (("daily_quota", "2"), ("relax", "off")):  # past the quota: refused
        change_setting(SettingsStore(open_db(bot_settings.db_path)), bot_settings, guild,
                       key, value, actor="1", via="cli")
    bot_settings.models["tiny"].steps = 150  # long enough to be caught running
    async with running_client(server, make_bot(bot_settings)) as bot:
        first = await draw(server, server.alice, seed=1)
        second = await draw(server, server.alice, seed=2)
        m1, m2 = await first.wait_original(), await second.wait_original()
        job1, job2 = (await bot.queue.list_jobs(limit=2, newest_first=False))
        # Someone else may not cancel Alice's job.
        ix = await server.press_button(server.bob, m2, button(m2, "ab:cancel"))
        answer = await ix.wait_response()
        assert answer["data"]["flags"] & 64 and "Only the person who asked for job" in \
            answer["data"]["content"]
        assert (await bot.queue.get(job2.id)).status is JobStatus.QUEUED
        # Alice's Cancel button ends her queued job at once; its message says so.
        ix = await server.press_button(server.alice, m2, button(m2, "ab:cancel"))
        assert (await ix.wait_response())["data"]["content"] == f"Job {job2.id} is canceled."
        await second.wait_original(lambda m: "was canceled" in (m.content or ""), timeout=10)
        # ❌ on the running one stops it at its next step.
        for _ in range(400):
            if (await bot.queue.get(job1.id)).status is JobStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        await server.add_reaction(server.alice, m1, "❌")
        await first.wait_original(lambda m: "was canceled" in (m.content or ""), timeout=30)
        assert (await bot.queue.get(job1.id)).status is JobStatus.CANCELED
        assert not (await first.wait_original()).buttons  # no Cancel left on an ended job
        # /queue cancel: a third job, canceled by its id.
        third = await draw(server, server.alice, seed=3)
        job3 = await newest_job(bot)
        ix = await server.slash_command(server.alice, server.general, "queue",
                                        {"cancel": job3.id})
        text = (await ix.wait_response())["data"]["content"]
        assert text in (f"Job {job3.id} is canceled.", f"Job {job3.id} stops at its next step.")
        await third.wait_original(lambda m: "was canceled" in (m.content or ""), timeout=30)
        # Three canceled jobs cost nothing: the quota of 2 is whole, two draws go through.
        bot_settings.models["tiny"].steps = 4
        for seed in (4, 5):
            await result(await draw(server, server.alice, seed=seed))
    server.assert_clean()
