"""artbot: a self-hosted Discord bot for AI art.

This package holds what every layer shares and nothing heavy: the settings
object (`artbot.config`), the user-facing error type (`artbot.errors`) and the
command line (`artbot.cli`). It imports neither torch nor discord at import
time.
"""

__version__ = "0.1.0"
