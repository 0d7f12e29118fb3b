"""Style transfer on Discord: /stylize, and the server's style presets (/preset).

/stylize takes one style: a style image, a preset, or words (diffusion). The
request is built by `worker.requests.build_stylize`, as the CLI builds it;
presets are kept by members with Manage Server.
"""

# No `from __future__ import annotations`: discord.py reads the option types
# from the annotations.
from typing import Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot.client import ArtBot
from bot.errors import refuse
from bot.i18n import t
from bot.permissions import require_manage_server
from bot.posting import store_upload, submit_from_interaction
from worker.requests import build_stylize, check_preset_name


def presets_offered(bot: ArtBot):
    """An autocomplete callback: this server's style presets (and the operator's) whose
    names contain what was typed. /stylize and /draw's style_preset both offer them."""

    async def complete(interaction: discord.Interaction, current: str):
        guild = str(interaction.guild_id) if interaction.guild_id else None
        presets = await bot.queue.presets(guild)
        return [app_commands.Choice(name=p.name, value=p.name)
                for p in presets if current.lower() in p.name.lower()][:25]

    return complete


async def setup(bot: ArtBot) -> None:
    tree = bot.tree
    preset_autocomplete = presets_offered(bot)

    @tree.command(name=_("stylize"), description=_("Restyle an image like a style image, a preset or words"))
    @app_commands.describe(
        image=_("The image to restyle"), style=_("An image whose style to copy"),
        preset=_("A style saved by the server's admins"), prompt=_("A style in words (diffusion)"),
        method=_("gatys: careful, slower; adain: fast; diffusion: by words"),
        strength=_("How strong the style is"), size=_("Longest side of the result in pixels"),
    )
    @app_commands.rename(image=_("image"), style=_("style"), preset=_("preset"), prompt=_("prompt"),
                         method=_("method"), strength=_("strength"), size=_("size"))
    @app_commands.choices(method=[app_commands.Choice(name="gatys", value="gatys"),
                                  app_commands.Choice(name="adain", value="adain"),
                                  app_commands.Choice(name="diffusion", value="diffusion")])
    @app_commands.autocomplete(preset=preset_autocomplete)
    async def stylize(
        interaction: discord.Interaction,
        image: discord.Attachment,
        style: Optional[discord.Attachment] = None,
        preset: Optional[str] = None,
        prompt: Optional[app_commands.Range[str, 1, 500]] = None,
        method: Optional[app_commands.Choice[str]] = None,
        strength: Optional[app_commands.Range[float, 0.05, 10.0]] = None,
        size: Optional[app_commands.Range[int, 32, 1024]] = None,
    ) -> None:
        if sum(x is not None for x in (style, preset, prompt)) != 1:
            raise refuse("stylize_one_style")
        notes: list[str] = []
        content_sha, content_size = await store_upload(bot, image, notes)
        style_sha = None
        if style is not None:
            style_sha, _ = await store_upload(bot, style, notes)
        elif preset is not None:
            guild = str(interaction.guild_id) if interaction.guild_id else None
            saved = await bot.queue.preset(guild, preset)
            if saved is None:
                raise refuse("preset_unknown", name=preset)
            style_sha = saved.image_sha
        spec = build_stylize(await bot.settings_for(interaction), content_sha=content_sha,
                             content_size=content_size,
                             style_sha=style_sha, prompt=prompt,
                             method=method.value if method else None, size=size,
                             strength=strength, preset=preset)
        await submit_from_interaction(bot, interaction, spec, notes=notes)

    presets = app_commands.Group(name=_("preset"), description=_("Style presets for /stylize"),
                                 guild_only=True)

    @presets.command(name=_("add"), description=_("Save a style image under a name"))
    @app_commands.describe(name=_("Name of the preset"), image=_("The style image"))
    @app_commands.rename(name=_("name"), image=_("image"))
    async def preset_add(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                         image: discord.Attachment) -> None:
        require_manage_server(interaction)
        name = check_preset_name(name)  # control characters out, something visible in it
        sha, _ = await store_upload(bot, image)
        guild = str(interaction.guild_id)
        await bot.queue.save_preset(guild, name, sha, str(interaction.user.id))
        await interaction.response.send_message(t("preset_saved", interaction.locale, name=name),
                                                ephemeral=True)

    @presets.command(name=_("list"), description=_("The style presets of this server"))
    async def preset_list(interaction: discord.Interaction) -> None:
        guild = str(interaction.guild_id)
        saved = await bot.queue.presets(guild)
        text = ", ".join(p.name for p in saved) if saved else t("preset_none", interaction.locale)
        await interaction.response.send_message(text, ephemeral=True)

    @presets.command(name=_("remove"), description=_("Remove a style preset"))
    @app_commands.describe(name=_("Name of the preset"))
    @app_commands.rename(name=_("name"))
    @app_commands.autocomplete(name=preset_autocomplete)
    async def preset_remove(interaction: discord.Interaction, name: str) -> None:
        require_manage_server(interaction)
        guild = str(interaction.guild_id)
        if not await bot.queue.delete_preset(guild, name):
            raise refuse("preset_unknown", name=name)
        await interaction.response.send_message(t("preset_removed", interaction.locale, name=name),
                                                ephemeral=True)

    tree.add_command(presets)
