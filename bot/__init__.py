"""The Discord front door (discord.py). No torch here.

Bottom to top (no module imports one above it):

- `bot.i18n`: English and Simplified Chinese; `bot.render`: what a job looks
  like as a message (text, embed, image, grid); `bot.errors`: the one error
  sink; `bot.permissions`: admins and moderators;
- `bot.client`: the `ArtBot`: lifecycle and the services it is handed (queue,
  image store, settings); it loads the features below as extensions;
- `bot.posting`: queueing a job for a member and posting its first message;
- the extensions, each with `async def setup(bot)`: `bot.results` (buttons,
  the remix dialog, reactions), `bot.delivery` (progress, then the result),
  `bot.drawing` (/draw, /vary), `bot.styles` (/stylize, /preset),
  `bot.history` (/history, /job, /queue, /help), `bot.admin` (/settings,
  /quota, /stats).
"""
