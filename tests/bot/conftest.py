"""Fixtures of the bot tests: a fresh Discord-protocol server, and settings for a
bot that draws with the tiny random-weight diffusion pipeline on the CPU.
(tests/bot/test_discord_server.py, which tests the server itself, has its own.)"""

from __future__ import annotations

import pytest
import pytest_asyncio

from artbot.config import Settings
from tests.bot.discord_server import DiscordServer


@pytest_asyncio.fixture
async def server():
    async with DiscordServer() as s:
        yield s


@pytest.fixture
def bot_settings(tmp_path, tiny_pipeline) -> Settings:
    # The tiny model is in the catalogue with 4 steps (its architecture's 30 would only
    # slow the tests down); tests that need longer jobs raise them there.
    return Settings(data_dir=tmp_path / "data", default_model=str(tiny_pipeline),
                    models={"tiny": {"source": str(tiny_pipeline), "steps": 4}},
                    default_size="64x64", device="cpu", max_queued_per_user=20,
                    discord_token="test-token")
