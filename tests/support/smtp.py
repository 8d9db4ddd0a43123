"""A real SMTP server for tests (aiosmtpd on 127.0.0.1 and a free port), keeping what it got."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.services import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        """Every text part, decoded."""
        parts = []
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                parts.append(payload.decode(part.get_content_charset() or "utf-8"))
        return "\n".join(parts)


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          message_from_bytes(envelope.original_content)))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._handler = _Handler()
        self._controller = Controller(self._handler, hostname=self.host, port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.received)

    def settings(self) -> dict[str, Any]:
        """The ``[smtp]`` overrides that send here."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_starttls": False,
                "smtp_timeout": 5, "smtp_retry_limit": 2}

    def env(self) -> dict[str, str]:
        return {f"SQUALL__SMTP__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in self.settings().items()}


def running_smtp_server() -> Iterator[SmtpServer]:
    """For a test module's fixture: ``yield from running_smtp_server()``."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
