"""Errors a user can cause or meet, each with a message meant for people."""

from __future__ import annotations


class RuminationError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class ConfigError(RuminationError):
    """A bad setting, flag or plugin name."""


class BackendError(RuminationError):
    """The model backend cannot load or generate."""
