"""Drawing: /draw (text to image) and /vary (an uploaded image, or an earlier job).

Thin on purpose: each command builds the request with the same
`worker.requests` builders the CLI uses, from the server's defaults and limits
(`ArtBot.settings_for`), and hands it to `bot.posting`, which queues it through
the gate and answers. Errors go to the one sink (`bot.errors`). The commands
are built when the extension loads because their choices and limits come from
the settings.
"""

# No `from __future__ import annotations` here: discord.py reads the option types
# from the annotations, and some of them name this function's local `settings`.
from typing import Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot import render
from bot.client import ArtBot
from bot.errors import refuse
from bot.posting import job_from_reference, store_upload, submit_from_interaction, variation_spec
from worker.requests import SAMPLER_NAMES, STRENGTHS, build_draw, build_vary, model_choices, parse_size

SEED_MAX = 2**32 - 1


def size_choices(bot: ArtBot) -> list[app_commands.Choice[str]]:
    """Square, portrait and landscape around the configured default size."""
    w, h = parse_size(bot.settings.default_size, bot.settings)
    long_w = min(bot.settings.max_size, (w * 3 // 2) // 8 * 8)
    long_h = min(bot.settings.max_size, (h * 3 // 2) // 8 * 8)
    shapes = [("Square", w, h), ("Portrait", w, long_h), ("Landscape", long_w, h)]
    return [app_commands.Choice(name=_(f"{name} {sw}×{sh}"), value=f"{sw}x{sh}")
            for name, sw, sh in shapes]


async def setup(bot: ArtBot) -> None:
    """Add /draw and /vary; their ranges and choices come from the operator's settings."""
    tree = bot.tree
    settings = bot.settings

    async def model_autocomplete(interaction: discord.Interaction, current: str):
        """The models allowed in this channel that match what was typed."""
        policy = await bot.rules(interaction.guild_id, interaction.channel_id)
        names = [n for n in model_choices(settings)
                 if policy.allows_model(settings.resolve_model(n), settings)]
        current = current.lower()
        return [app_commands.Choice(name=render.short_model(n)[:100], value=n[:100])
                for n in dict.fromkeys(names) if current in n.lower()][:25]

    @tree.command(name=_("draw"), description=_("Draw images from a text prompt"))
    @app_commands.describe(
        prompt=_("What to draw"), negative=_("What to keep out of the image"),
        model=_("Which model draws it"), size=_("Shape and size of the image"),
        steps=_("Denoising steps (more is slower, often finer)"),
        seed=_("Seed, to make the same image again"), count=_("How many images (1-4)"),
        sampler=_("Sampler, as in A1111 (default: the model's own)"),
    )
    @app_commands.rename(prompt=_("prompt"), negative=_("negative"), model=_("model"),
                         size=_("size"), steps=_("steps"), seed=_("seed"), count=_("count"),
                         sampler=_("sampler"))
    @app_commands.choices(size=size_choices(bot),
                          sampler=[app_commands.Choice(name=name, value=name) for name in SAMPLER_NAMES])
    @app_commands.autocomplete(model=model_autocomplete)
    async def draw(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        negative: Optional[app_commands.Range[str, 1, 1000]] = None,
        model: Optional[str] = None,
        size: Optional[app_commands.Choice[str]] = None,
        steps: Optional[app_commands.Range[int, 1, settings.max_steps]] = None,
        seed: Optional[app_commands.Range[int, 0, SEED_MAX]] = None,
        count: app_commands.Range[int, 1, settings.max_count] = 1,
        sampler: Optional[app_commands.Choice[str]] = None,
    ) -> None:
        here = await bot.settings_for(interaction)  # the server's defaults and limits
        spec = build_draw(here, prompt=prompt, negative_prompt=negative or "", model=model,
                          size=size.value if size else None, steps=steps, seed=seed, count=count,
                          sampler=sampler.value if sampler else None)
        await submit_from_interaction(bot, interaction, spec)

    @tree.command(name=_("vary"), description=_("Make a variation of an image"))
    @app_commands.describe(
        image=_("An image to vary"), job=_("An earlier job: its id or a link to its message"),
        strength=_("How far the variation may move from the image"),
        prompt=_("What the variation should show (optional)"),
    )
    @app_commands.rename(image=_("image"), job=_("job"), strength=_("strength"), prompt=_("prompt"))
    @app_commands.choices(strength=[app_commands.Choice(name=_("Subtle"), value="subtle"),
                                    app_commands.Choice(name=_("Strong"), value="strong")])
    async def vary(
        interaction: discord.Interaction,
        image: Optional[discord.Attachment] = None,
        job: Optional[str] = None,
        strength: Optional[app_commands.Choice[str]] = None,
        prompt: Optional[app_commands.Range[str, 1, 1000]] = None,
    ) -> None:
        how = strength.value if strength else "subtle"
        here = await bot.settings_for(interaction)
        if image is not None:
            sha, size_ = await store_upload(bot, image)
            spec = build_vary(here, init_image_sha=sha, init_size=size_, prompt=prompt or "",
                              strength=STRENGTHS[how])
        elif job:
            source, idx = await job_from_reference(bot, job, interaction.guild_id)
            spec = await variation_spec(bot, here, source, idx, how, prompt=prompt)
        else:
            raise refuse("vary_needs_source")
        await submit_from_interaction(bot, interaction, spec)
