"""``squall triggerer``: the asyncio service that holds deferred task instances' triggers.

:mod:`~squall.triggerer.trigger_rows` (claiming by lease, firing, failing, cleaning up: the
database side), :mod:`~squall.triggerer.runner` (the event loop and its watchdog) and
:mod:`~squall.triggerer.job` (the process: its job row, its lease, the main loop). ADR 28
says why a trigger is held by a lease; ``docs/guarantees.md`` (promise 11) what it bounds.
"""
