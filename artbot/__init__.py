"""artbot: a self-hosted Discord bot for AI art.

This package is the bottom layer, what every other one shares and nothing
heavy: the settings object (`artbot.config`) and the user-facing error types
(`artbot.errors`). It imports nothing else of artbot's, and neither torch nor
discord. The command line is the top layer, in `cli/`.
"""

__version__ = "0.1.0"
