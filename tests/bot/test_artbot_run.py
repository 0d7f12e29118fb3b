"""`artbot run` tried as a new user would: a real process with DISCORD_TOKEN and the
two ARTBOT_DISCORD_* variables pointing at the Discord-protocol server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.bot.discord_server import DiscordServer

ARTBOT = Path(sys.executable).parent / "artbot"
ROOT = Path(__file__).resolve().parents[2]


def has_image(message) -> bool:
    """The result is shown: a PNG with buttons (a preview of the image forming, with
    the Cancel button, is a JPEG)."""
    return any(a["filename"].endswith(".png") for a in message.attachments) and bool(message.buttons)


async def start(server, data_dir, model, token="test-token"):
    env = dict(os.environ, DISCORD_TOKEN=token, ARTBOT_DISCORD_API_BASE=server.api_base,
               ARTBOT_DISCORD_GATEWAY=server.gateway_url, ARTBOT_DATA_DIR=str(data_dir),
               ARTBOT_DEFAULT_MODEL=str(model), ARTBOT_DEFAULT_SIZE="64x64",
               ARTBOT_DEFAULT_STEPS="4", ARTBOT_DEVICE="cpu", HF_HUB_OFFLINE="1")
    cmd = [str(ARTBOT)] if ARTBOT.exists() else [sys.executable, "-m", "cli"]
    return await asyncio.create_subprocess_exec(*cmd, "run", env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()


@pytest.mark.asyncio
async def test_run_draw_react_restart_reroll_and_refuse_delete(tmp_path, tiny_pipeline):
    async with DiscordServer() as server:
        proc = await start(server, tmp_path / "data", tiny_pipeline)
        try:
            await server.wait_for_commands("draw", "vary", "history", "job", "queue", "help",
                                           timeout=60)
            ix = await server.slash_command(server.alice, server.general, "draw",
                                            {"prompt": "a red fox", "seed": 7})
            first = await ix.wait_original(has_image, timeout=60)
            assert first.attachment_bytes(0)[:8] == b"\x89PNG\r\n\x1a\n"
            labels = {b.get("label") for b in first.buttons}
            assert {"Reroll", "Delete"} <= labels

            await server.add_reaction(server.bob, first, "🎲")
            await server.wait_for_message(channel_id=server.general.id,
                                          predicate=lambda m: m.id != first.id and has_image(m),
                                          timeout=60)
        finally:
            code, log = await stop(proc)
        assert code == 0, log
        assert "test-token" not in log

        proc = await start(server, tmp_path / "data", tiny_pipeline)
        try:
            await server.wait_until_ready(timeout=60)
            reroll = next(b["custom_id"] for b in first.buttons if b.get("label") == "Reroll")
            ix = await server.press_button(server.alice, server.message(first.id), reroll)
            again = await ix.wait_original(has_image, timeout=60)
            assert again.id != first.id

            delete = next(b["custom_id"] for b in first.buttons if b.get("label") == "Delete")
            ix = await server.press_button(server.bob, server.message(first.id), delete)
            refusal = await ix.wait_response(timeout=10)
            assert refusal["data"]["flags"] & 64
            assert not server.message(first.id).deleted
        finally:
            code, log = await stop(proc)
        assert code == 0, log
        server.assert_clean()


@pytest.mark.asyncio
async def test_rejected_or_missing_token_is_one_line_and_exit_2(tmp_path, tiny_pipeline):
    async with DiscordServer() as server:
        proc = await start(server, tmp_path / "data", tiny_pipeline, token="wrong-token")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        lines = [l for l in err.decode().splitlines() if l.startswith("error:")]
        assert lines == ["error: Discord rejected the token in DISCORD_TOKEN (401 Unauthorized)."]
        assert "wrong-token" not in err.decode()

        proc = await start(server, tmp_path / "data", tiny_pipeline, token="")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        assert err.decode().strip().startswith("error: DISCORD_TOKEN is not set")
