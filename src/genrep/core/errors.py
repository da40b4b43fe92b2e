"""Errors that are the user's to fix.

Anything raised as a :class:`UserError` is reported by the CLI as one line on stderr with exit
code 2 and no traceback (``--debug`` shows the traceback).
"""


class UserError(Exception):
    """A mistake in the user's input (config, file, name); the message names the culprit."""


class ConfigError(UserError):
    """A config file or override names an unknown key or has a value of the wrong type."""


class AssetError(UserError):
    """A bundled asset is unknown or not installed; the message says how to install it."""
