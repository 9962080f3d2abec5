"""The errors that mean bad input: the CLI prints them as one line and exits with status 2.

A module of its own, free of imports, so that every layer (cli, config, tracking, the commands)
can raise them without importing each other.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one clear message, exit status 2."""


class ConfigError(ValueError):
    """A config file or override that cannot be used as given."""
