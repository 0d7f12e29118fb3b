"""Drawing: /draw (text to image) and /vary (an uploaded image, or an earlier job).

/draw may take a style reference (`style`, an image, or `style_preset`, one of
/stylize's presets): the images drawn are then restyled like it, and the result
says how (AdaIN where the operator has its decoder, else Gatys).

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
from bot.i18n import choice_text
from bot.posting import job_from_reference, store_upload, submit_from_interaction, variation_spec
from bot.styles import presets_offered
from worker.loras import available_loras, parse_lora
from worker.requests import (SAMPLER_NAMES, STRENGTHS, build_draw, build_vary,
                             check_member_model, model_choices, size_choices)

SEED_MAX = 2**32 - 1


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

        def label(name: str) -> str:
            entry = settings.models.get(name)
            shown = render.short_model(name)
            return f"{shown} · {entry.description}" if entry and entry.description else shown

        return [app_commands.Choice(name=label(n)[:100], value=n[:100])
                for n in dict.fromkeys(names)
                if current in n.lower() or current in label(n).lower()][:25]

    async def lora_autocomplete(interaction: discord.Interaction, current: str):
        """The LoRAs allowed here and with the model chosen so far; `name:0.8` sets a weight."""
        policy = await bot.rules(interaction.guild_id, interaction.channel_id)
        model = getattr(interaction.namespace, "model", None) or None
        entry = settings.model_entry(model)
        names = [n for n in available_loras(settings) if policy.allows_lora(n)
                 and (entry is None or entry.loras is None or n in entry.loras)]
        typed, _, weight = current.partition(":")
        return [app_commands.Choice(name=f"{n}:{weight}" if weight else n,
                                    value=f"{n}:{weight}" if weight else n)
                for n in names if typed.strip().lower() in n.lower()][:25]

    async def size_autocomplete(interaction: discord.Interaction, current: str):
        """The aspect-ratio sizes of the model chosen so far (or the default one), within
        the server's largest size; what the member typed is offered as it is too."""
        here = await bot.settings_for(interaction)
        model = getattr(interaction.namespace, "model", None) or None
        sizes = size_choices(here, model)
        current = current.strip().lower()
        shown = [app_commands.Choice(name=choice_text(name, interaction.locale), value=value)
                 for name, value in sizes if current in name.lower() or current in value]
        if current and not any(c.value == current for c in shown):
            shown.insert(0, app_commands.Choice(name=current[:100], value=current[:100]))
        return shown[:25]

    preset_autocomplete = presets_offered(bot)

    @tree.command(name=_("draw"), description=_("Draw images from a text prompt"))
    @app_commands.describe(
        prompt=_("What to draw"), negative=_("What to keep out of the image"),
        model=_("Which model draws it"), size=_("Shape and size of the image"),
        steps=_("Denoising steps (more is slower, often finer)"),
        seed=_("Seed, to make the same image again"), count=_("How many images (1-4)"),
        sampler=_("Sampler, as in A1111 (default: the model's own)"),
        guidance=_("How closely to follow the prompt (default: the model's own)"),
        lora=_("A LoRA to apply, NAME or NAME:WEIGHT (more: <lora:NAME:0.8> in the prompt)"),
        style=_("A style reference: the images are drawn in its style"),
        style_preset=_("A style preset of this server, as a style reference"),
    )
    @app_commands.rename(prompt=_("prompt"), negative=_("negative"), model=_("model"),
                         size=_("size"), steps=_("steps"), seed=_("seed"), count=_("count"),
                         sampler=_("sampler"), guidance=_("guidance"), lora=_("lora"),
                         style=_("style"), style_preset=_("style_preset"))
    @app_commands.choices(
        sampler=[app_commands.Choice(name=name, value=name) for name in SAMPLER_NAMES])
    @app_commands.autocomplete(model=model_autocomplete, size=size_autocomplete,
                               lora=lora_autocomplete, style_preset=preset_autocomplete)
    async def draw(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        negative: Optional[app_commands.Range[str, 1, 1000]] = None,
        model: Optional[str] = None,
        size: Optional[app_commands.Range[str, 1, 20]] = None,
        steps: Optional[app_commands.Range[int, 1, settings.max_steps]] = None,
        seed: Optional[app_commands.Range[int, 0, SEED_MAX]] = None,
        count: app_commands.Range[int, 1, settings.max_count] = 1,
        sampler: Optional[app_commands.Choice[str]] = None,
        guidance: Optional[app_commands.Range[float, 0.0, 30.0]] = None,
        lora: Optional[app_commands.Range[str, 1, 100]] = None,
        style: Optional[discord.Attachment] = None,
        style_preset: Optional[str] = None,
    ) -> None:
        here = await bot.settings_for(interaction)  # the server's defaults and limits
        check_member_model(here, model)  # a model by name, never a path on this machine
        if style is not None and style_preset:
            raise refuse("draw_one_style")
        style_sha, notes = None, []
        if style is not None:
            style_sha, _size = await store_upload(bot, style, notes)
        elif style_preset:
            saved = await bot.queue.preset(str(interaction.guild_id) if interaction.guild_id
                                           else None, style_preset)
            if saved is None:
                raise refuse("preset_unknown", name=style_preset)
            style_sha = saved.image_sha
        spec = build_draw(here, prompt=prompt, negative_prompt=negative or "", model=model,
                          size=size, steps=steps, seed=seed, count=count,
                          sampler=sampler.value if sampler else None, guidance=guidance,
                          loras=[parse_lora(lora)] if lora else None, style_sha=style_sha)
        await submit_from_interaction(bot, interaction, spec, notes=notes)

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
        notes: list[str] = []
        if image is not None:
            sha, size_ = await store_upload(bot, image, notes)
            spec = build_vary(here, init_image_sha=sha, init_size=size_, prompt=prompt or "",
                              strength=STRENGTHS[how])
        elif job:
            source, idx = await job_from_reference(bot, job, interaction.guild_id)
            spec = await variation_spec(bot, here, source, idx, how, prompt=prompt)
        else:
            raise refuse("vary_needs_source")
        await submit_from_interaction(bot, interaction, spec, notes=notes)
