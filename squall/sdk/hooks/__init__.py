"""Hooks: the base class of what talks to an external system through a connection."""

from squall.sdk.hooks.base import BaseHook

__all__ = ["BaseHook"]
