"""The Discord front door (discord.py). No torch here.

- `bot.client`: the `ArtBot` (a `commands.Bot`), startup, reactions, the error sink.
- `bot.commands`: the slash commands (/draw, /vary, /history, /job, /queue, /help).
- `bot.views`: buttons and dialogs; each button's state lives in its custom id,
  so buttons keep working after restarts.
- `bot.delivery`: a job's life on Discord: queue position, progress, the result.
- `bot.render`: what a job looks like as a message (text, embed, image, grid).
- `bot.i18n`: English and Simplified Chinese.
"""
