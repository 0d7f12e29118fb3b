"""Image tools as commands: /blend (2 to 5 images into one) and /describe (an image
into prompts to draw from).

Like /draw, each builds its request with the `worker.requests` builders the CLI
uses (`build_blend`, `build_describe`), from the server's defaults and limits,
and hands it to `bot.posting`, which queues it through the one gate and answers.
Uploads are checked and stored by `store_upload`. A /describe result is words:
`bot.delivery` shows its prompts with a Draw button each (`bot.results`).
The result buttons for upscale, zoom out and pan live in `bot.results`.
"""

# No `from __future__ import annotations` here: discord.py reads the option types
# from the annotations.
from typing import Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot import render
from bot.client import ArtBot
from bot.errors import refuse
from bot.posting import image_of, job_from_reference, store_upload, submit_from_interaction
from generators.bundled import family_of
from worker.requests import (BLEND_FAMILIES, build_blend, build_describe, check_member_model,
                             model_choices)

SEED_MAX = 2**32 - 1


def blend_models(bot: ArtBot, policy) -> list[str]:
    """The models that can blend and are allowed here."""
    settings = bot.settings
    names = []
    for name in model_choices(settings):
        ref = settings.resolve_model(name)
        if family_of(ref) in BLEND_FAMILIES and policy.allows_model(ref, settings):
            names.append(name)
    return names


async def setup(bot: ArtBot) -> None:
    tree = bot.tree

    async def model_autocomplete(interaction: discord.Interaction, current: str):
        policy = await bot.rules(interaction.guild_id, interaction.channel_id)
        current = current.lower()
        return [app_commands.Choice(name=render.short_model(n)[:100], value=n[:100])
                for n in dict.fromkeys(blend_models(bot, policy)) if current in n.lower()][:25]

    @tree.command(name=_("blend"), description=_("Blend 2 to 5 images into one"))
    @app_commands.describe(
        image1=_("An image to blend"), image2=_("An image to blend"),
        image3=_("Another image to blend (optional)"), image4=_("Another image to blend (optional)"),
        image5=_("Another image to blend (optional)"),
        prompt=_("What the blend should show (optional)"), model=_("Which model blends them"),
        size=_("Shape and size of the image"), seed=_("Seed, to make the same image again"),
    )
    @app_commands.rename(image1=_("image1"), image2=_("image2"), image3=_("image3"),
                         image4=_("image4"), image5=_("image5"), prompt=_("prompt"),
                         model=_("model"), size=_("size"), seed=_("seed"))
    @app_commands.autocomplete(model=model_autocomplete)
    async def blend(
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: Optional[discord.Attachment] = None,
        image4: Optional[discord.Attachment] = None,
        image5: Optional[discord.Attachment] = None,
        prompt: Optional[app_commands.Range[str, 1, 1000]] = None,
        model: Optional[str] = None,
        size: Optional[app_commands.Range[str, 1, 20]] = None,
        seed: Optional[app_commands.Range[int, 0, SEED_MAX]] = None,
    ) -> None:
        here = await bot.settings_for(interaction)
        check_member_model(here, model)  # a model by name, never a path on this machine
        shas, sizes, notes = [], [], []
        for attachment in (image1, image2, image3, image4, image5):
            if attachment is not None:
                sha, size_ = await store_upload(bot, attachment, notes)
                shas.append(sha)
                sizes.append(size_)
        spec = build_blend(here, image_shas=shas, sizes=sizes, prompt=prompt or "", model=model,
                           seed=seed, size=size)
        await submit_from_interaction(bot, interaction, spec, notes=notes)

    @tree.command(name=_("describe"), description=_("Turn an image into prompts to draw from"))
    @app_commands.describe(image=_("An image to describe"),
                           job=_("An earlier job: its id or a link to its message"))
    @app_commands.rename(image=_("image"), job=_("job"))
    async def describe(
        interaction: discord.Interaction,
        image: Optional[discord.Attachment] = None,
        job: Optional[str] = None,
    ) -> None:
        here = await bot.settings_for(interaction)
        notes: list[str] = []
        if image is not None:
            sha, size_ = await store_upload(bot, image, notes)
            spec = build_describe(here, image_sha=sha, image_size=size_)
        elif job:
            source, idx = await job_from_reference(bot, job, interaction.guild_id)
            record = await image_of(bot, source, idx)
            spec = build_describe(here, image_sha=record.sha256,
                                  image_size=(record.width, record.height), parent_id=source.id)
        else:
            raise refuse("describe_needs_source")
        await submit_from_interaction(bot, interaction, spec, notes=notes)
