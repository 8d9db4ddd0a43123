"""EmailOperator: send an e-mail through the ``[smtp]`` server, as Airflow 2's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.email import send_email
from squall.sdk.operators.base import BaseOperator, Context


class EmailOperator(BaseOperator):
    """Send ``subject`` / ``html_content`` to ``to`` (an address, a list, or addresses
    separated by ``,`` or ``;``), with ``cc``, ``bcc`` and the attachments ``files``.

    ``to``, ``subject``, ``html_content`` and ``files`` are templated; an ``html_content``
    ending in ``.html`` is the name of a template file. The message goes through the worker's
    ``[smtp]`` settings (read when the task runs); a message that cannot be sent fails the
    try (with its retries), as in Airflow.
    """

    template_fields: Sequence[str] = ("to", "subject", "html_content", "files")
    template_fields_renderers = {"html_content": "html"}
    template_ext: Sequence[str] = (".html",)
    ui_color = "#e6faf9"

    def __init__(
        self,
        *,
        to: str | Sequence[str],
        subject: str,
        html_content: str,
        files: Sequence[str] | None = None,
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        mime_subtype: str = "mixed",
        mime_charset: str = "utf-8",
        custom_headers: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not to:
            raise DagDefinitionError(f"EmailOperator({self.task_id!r}): to is empty")
        self.to = to
        self.subject = subject
        self.html_content = html_content
        self.files = list(files or [])
        self.cc = cc
        self.bcc = bcc
        self.mime_subtype = mime_subtype
        self.mime_charset = mime_charset
        self.custom_headers = custom_headers

    def execute(self, context: Context) -> None:
        send_email(self.to, self.subject, self.html_content, files=self.files, cc=self.cc,
                   bcc=self.bcc, mime_subtype=self.mime_subtype,
                   mime_charset=self.mime_charset, custom_headers=self.custom_headers)
