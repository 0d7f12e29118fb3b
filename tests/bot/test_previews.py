"""A running /draw shows the image forming: against the Discord-protocol server, the
job's message is edited with a JPEG preview before the final PNG replaces it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.bot.discord_server import running_client
from tests.bot.test_bot import draw, has_image, make_bot, newest_job, png_size


def image_format(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        return im.format


@pytest.mark.asyncio
async def test_a_running_draw_shows_previews_then_only_the_result(server, bot_settings):
    # Long enough to outlast the first 1.5 s between edits even on a fast, idle machine,
    # where the tiny pipeline makes 40 steps in under 1.5 s.
    bot_settings.models["tiny"].steps = 120
    async with running_client(server, make_bot(bot_settings)) as bot:
        ix = await draw(server, server.alice, seed=2)
        message = await ix.wait_original(has_image, timeout=120)  # slow only on a loaded machine
        stored = server.message(message.id)
        edits = [e.payload for e in stored.edits]
        # Progress edits that carry a preview: a JPEG attachment, with "step k of 120".
        shown = [i for i, e in enumerate(edits) if e["attachments"] and
                 e["attachments"][0]["filename"].endswith("-preview.jpg")]
        assert shown, [e["content"] for e in edits]
        for i in shown:
            (attachment,) = edits[i]["attachments"]
            assert image_format(stored.files[attachment["id"]].data) == "JPEG"
            assert attachment["content_type"] == "image/jpeg"
            assert "of 120" in edits[i]["content"]
        # ...all before the result, which holds only its PNG: the preview is gone.
        assert shown[-1] < len(edits) - 1
        (final,) = message.attachments
        assert final["filename"] == f"artbot-{(await newest_job(bot)).id}.png"
        assert png_size(message) == (64, 64)
        # Previews do not add edits beyond Discord's pace: 1.5 s apart, as before.
        gaps = [b - a for a, b in zip(stored.edit_times, stored.edit_times[1:])]
        assert min(gaps) >= 1.45, gaps
    server.assert_clean()
