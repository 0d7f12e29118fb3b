"""The slash commands: /draw, /vary, /stylize, /preset, /history, /job, /queue,
/quota, /help, and for admins /settings and /stats.

Thin on purpose: each one validates what the user typed (through the same
`worker.jobs` builders the CLI uses), queues a job or reads the database, and
answers. Errors go to `ArtBot.report_error`. The commands are built at
startup because their choices and limits come from the settings.
"""


from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot import render
from bot.admin import register_admin_commands
from bot.i18n import t
from storage.jobs import JobStatus
from worker.jobs import (
    STRENGTHS,
    build_draw,
    build_stylize,
    build_vary,
    model_choices,
    parse_size,
)

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import ArtBot

SEED_MAX = 2**32 - 1


def size_choices(bot: "ArtBot") -> list[app_commands.Choice[str]]:
    """Square, portrait and landscape around the configured default size."""
    w, h = parse_size(bot.settings.default_size, bot.settings)
    long_w = min(bot.settings.max_size, (w * 3 // 2) // 8 * 8)
    long_h = min(bot.settings.max_size, (h * 3 // 2) // 8 * 8)
    shapes = [("Square", w, h), ("Portrait", w, long_h), ("Landscape", long_w, h)]
    return [app_commands.Choice(name=_(f"{name} {sw}×{sh}"), value=f"{sw}x{sh}")
            for name, sw, sh in shapes]


def register_commands(bot: "ArtBot") -> None:
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
    )
    @app_commands.rename(prompt=_("prompt"), negative=_("negative"), model=_("model"),
                         size=_("size"), steps=_("steps"), seed=_("seed"), count=_("count"))
    @app_commands.choices(size=size_choices(bot))
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
    ) -> None:
        here = await bot.settings_for(interaction)  # the server's defaults and limits
        spec = build_draw(here, prompt=prompt, negative_prompt=negative or "", model=model,
                          size=size.value if size else None, steps=steps, seed=seed, count=count)
        await bot.submit_from_interaction(interaction, spec)

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
        from bot.client import Refusal, parse_job_reference

        how = strength.value if strength else "subtle"
        here = await bot.settings_for(interaction)
        if image is not None:
            sha, size_ = await bot.store_upload(image)
            spec = build_vary(here, init_image_sha=sha, init_size=size_, prompt=prompt or "",
                              strength=STRENGTHS[how])
        elif job:
            job_id, message_id = parse_job_reference(job)
            idx = None
            if message_id is not None:
                link = await bot.queue.run(lambda s: s.message_link(str(message_id)))
                if link is None:
                    raise Refusal("job_not_found", job=job)
                job_id, idx = link["job_id"], link["image_idx"]
            if job_id is None:
                raise Refusal("job_not_found", job=job)
            source = await bot.job_in_guild(job_id, interaction.guild_id)
            spec = await bot.variation_spec(here, source, idx, how, prompt=prompt)
        else:
            raise Refusal("vary_needs_source")
        await bot.submit_from_interaction(interaction, spec)

    async def preset_autocomplete(interaction: discord.Interaction, current: str):
        guild = str(interaction.guild_id) if interaction.guild_id else None
        presets = await bot.queue.run(lambda s: s.presets(guild))
        return [app_commands.Choice(name=p["name"], value=p["name"])
                for p in presets if current.lower() in p["name"].lower()][:25]

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
        from bot.client import Refusal

        if sum(x is not None for x in (style, preset, prompt)) != 1:
            raise Refusal("stylize_one_style")
        content_sha, content_size = await bot.store_upload(image)
        style_sha = None
        if style is not None:
            style_sha, _ = await bot.store_upload(style)
        elif preset is not None:
            guild = str(interaction.guild_id) if interaction.guild_id else None
            saved = await bot.queue.run(lambda s: s.preset(guild, preset))
            if saved is None:
                raise Refusal("preset_unknown", name=preset)
            style_sha = saved["image_sha"]
        spec = build_stylize(await bot.settings_for(interaction), content_sha=content_sha,
                             content_size=content_size,
                             style_sha=style_sha, prompt=prompt,
                             method=method.value if method else None, size=size,
                             strength=strength, preset=preset)
        await bot.submit_from_interaction(interaction, spec)

    presets = app_commands.Group(name=_("preset"), description=_("Style presets for /stylize"),
                                 guild_only=True)

    def require_manage_server(interaction: discord.Interaction) -> None:
        from bot.client import Refusal

        perms = interaction.permissions
        if not (perms.manage_guild or perms.administrator):
            raise Refusal("needs_manage_server")

    @presets.command(name=_("add"), description=_("Save a style image under a name"))
    @app_commands.describe(name=_("Name of the preset"), image=_("The style image"))
    @app_commands.rename(name=_("name"), image=_("image"))
    async def preset_add(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                         image: discord.Attachment) -> None:
        require_manage_server(interaction)
        sha, _ = await bot.store_upload(image)
        guild = str(interaction.guild_id)
        await bot.queue.run(lambda s: s.save_preset(guild, name, sha, str(interaction.user.id)))
        await interaction.response.send_message(t("preset_saved", interaction.locale, name=name),
                                                ephemeral=True)

    @presets.command(name=_("list"), description=_("The style presets of this server"))
    async def preset_list(interaction: discord.Interaction) -> None:
        guild = str(interaction.guild_id)
        saved = await bot.queue.run(lambda s: s.presets(guild))
        text = ", ".join(p["name"] for p in saved) if saved else t("preset_none", interaction.locale)
        await interaction.response.send_message(text, ephemeral=True)

    @presets.command(name=_("remove"), description=_("Remove a style preset"))
    @app_commands.describe(name=_("Name of the preset"))
    @app_commands.rename(name=_("name"))
    @app_commands.autocomplete(name=preset_autocomplete)
    async def preset_remove(interaction: discord.Interaction, name: str) -> None:
        from bot.client import Refusal

        require_manage_server(interaction)
        guild = str(interaction.guild_id)
        if not await bot.queue.run(lambda s: s.delete_preset(guild, name)):
            raise Refusal("preset_unknown", name=name)
        await interaction.response.send_message(t("preset_removed", interaction.locale, name=name),
                                                ephemeral=True)

    tree.add_command(presets)
    register_admin_commands(bot, require_manage_server)

    @tree.command(name=_("history"), description=_("Your recent images, with prompts and seeds"))
    @app_commands.describe(user=_("Whose history (default: yours)"))
    @app_commands.rename(user=_("user"))
    async def history(interaction: discord.Interaction,
                      user: Optional[discord.User] = None) -> None:
        await bot.show_history(interaction, (user or interaction.user).id, 0)

    @tree.command(name=_("job"), description=_("Bring back an earlier job with its buttons"))
    @app_commands.describe(id=_("Job id (the number shown with each result)"))
    @app_commands.rename(id=_("id"))
    async def job_(interaction: discord.Interaction,
                   id: app_commands.Range[int, 1, 2**31 - 1]) -> None:  # noqa: A002
        job = await bot.job_in_guild(id, interaction.guild_id)
        if job.status is not JobStatus.SUCCEEDED:
            position = (await bot.queue.positions()).get(job.id)
            text = (render.failure_text(job) if job.status.finished
                    else render.status_text(job, job.status.value, position=position,
                                            step=job.progress_step, total=job.progress_total))
            await interaction.response.send_message(text, ephemeral=True)
            return
        await bot.send_result(interaction, job)

    @tree.command(name=_("queue"), description=_("Your queued and running jobs"))
    async def queue_(interaction: discord.Interaction) -> None:
        locale = interaction.locale
        guild = str(interaction.guild_id) if interaction.guild_id else None
        mine = await bot.queue.list_jobs(user_id=str(interaction.user.id), server_id=guild,
                                         statuses=[JobStatus.QUEUED, JobStatus.RUNNING],
                                         limit=50, newest_first=False)
        positions = await bot.queue.positions()
        running = await bot.queue.list_jobs(statuses=[JobStatus.RUNNING], limit=10)
        embed = discord.Embed(title=t("queue_title", locale), colour=discord.Colour.blurple())
        lines = []
        for job in mine:
            if job.status is JobStatus.RUNNING:
                progress = (t("step_of", locale, step=job.progress_step, total=job.progress_total)
                            if job.progress_total else t("starting", locale))
                lines.append(t("queue_line_running", locale, job=job.id, progress=progress))
            else:
                lines.append(t("queue_line_queued", locale, job=job.id,
                               position=positions.get(job.id, "?")))
        embed.description = "\n".join(lines) if lines else t("queue_empty", locale)
        now = [f"job {j.id} · <@{j.user_id}> · "
               + (t("step_of", locale, step=j.progress_step, total=j.progress_total)
                  if j.progress_total else t("starting", locale)) for j in running]
        embed.add_field(name=t("queue_running_now", locale),
                        value="\n".join(now) if now else t("nothing_running", locale), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @tree.command(name=_("help"), description=_("How to use artbot"))
    async def help_(interaction: discord.Interaction) -> None:
        embed = discord.Embed(title=t("help_title", interaction.locale),
                              description=t("help_text", interaction.locale),
                              colour=discord.Colour.blurple())
        await interaction.response.send_message(embed=embed, ephemeral=True)
