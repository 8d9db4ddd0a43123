"""Triggers: the asyncio waits a deferred task hands to a triggerer (``squall triggerer``)."""

from squall.sdk.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["BaseTrigger", "TriggerEvent"]
