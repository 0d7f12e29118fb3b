"""On Discord, a result says that AI made it and with which model: a small line under
the headline (seen where embeds are off and under a spoiler too) and the embed's Model
field, both with the model's catalogue name; the attached PNG, a grid of several
images included, carries the XMP that says so to whoever downloads it. /job shows the
same. Against the Discord-protocol server, with the tiny model in the catalogue as
"tiny"."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.bot.discord_server import running_client
from tests.bot.test_bot import draw, has_image, make_bot, newest_job, result

AI_MADE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def xmp_of(message) -> str:
    with Image.open(io.BytesIO(message.attachment_bytes(0))) as im:
        return im.info.get("XML:com.adobe.xmp", "")


@pytest.mark.asyncio
async def test_a_result_names_its_model_and_its_png_says_it_is_ai_made(
        server, bot_settings, tiny_pipeline):
    async with running_client(server, make_bot(bot_settings)) as bot:
        await server.wait_for_commands("draw", "job")
        message = await result(await draw(server, server.alice, seed=7))
        job = await newest_job(bot)
        assert message.content.splitlines()[-1] == "-# 🤖 Made by AI with tiny"
        fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
        assert fields["Model"] == "tiny"  # the catalogue's name, not the folder's path
        xmp = xmp_of(message)
        assert AI_MADE in xmp and f">{tiny_pipeline.name}<" in xmp
        assert f">{job.model_revision}<" in xmp

        # Two images come as one grid, which says the same.
        grid = await result(await draw(server, server.alice, count=2, seed=8))
        assert "Made by AI with tiny" in grid.content
        assert AI_MADE in xmp_of(grid)

        ix = await server.slash_command(server.bob, server.general, "job", {"id": job.id})
        shown = await ix.wait_original(has_image)
        assert "Made by AI with tiny" in shown.content and AI_MADE in xmp_of(shown)
    server.assert_clean()
