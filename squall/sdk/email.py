"""E-mail through SMTP, as Airflow 2's ``airflow.utils.email`` sends it.

:func:`send_email` builds a MIME message (an HTML part, attachments, ``Cc``; ``Bcc``
recipients get it without being named) and hands it to the ``[smtp]`` server of the
:class:`~squall.common.settings.SmtpSettings` it is given (or, called from user code without
them, of this process's settings, read on that first call). It connects at most
``smtp_retry_limit`` times, each attempt bounded by ``smtp_timeout``: only connecting is
retried (refused, reset, timed out, disconnected); a server that refuses the message or the
login fails it at once. Every failure is an :class:`~squall.common.errors.EmailError`; the
password never appears in a message or a log line.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from typing import Any

from squall.common.errors import EmailError
from squall.common.settings import Settings, SmtpSettings

log = logging.getLogger(__name__)

__all__ = ["build_mime_message", "get_email_address_list", "send_email", "send_mime_email"]

Addresses = str | Iterable[str] | None


def get_email_address_list(addresses: Addresses) -> list[str]:
    """The addresses of a string (separated by ``,`` or ``;``, as Airflow splits them) or
    of a list of them, stripped, empty ones dropped."""
    if addresses is None:
        return []
    items = [addresses] if isinstance(addresses, str) else list(addresses)
    out: list[str] = []
    for item in items:
        out.extend(a.strip() for a in re.split(r"[,;]", str(item)) if a.strip())
    return out


def build_mime_message(*, mail_from: str, to: Addresses, subject: str, html_content: str,
                       files: Iterable[str] | None = None, cc: Addresses = None,
                       mime_subtype: str = "mixed", mime_charset: str = "utf-8",
                       custom_headers: Mapping[str, Any] | None = None,
                       ) -> tuple[MIMEMultipart, list[str]]:
    """The message and its visible recipients (``To`` and ``Cc``)."""
    to_list = get_email_address_list(to)
    cc_list = get_email_address_list(cc)
    msg = MIMEMultipart(mime_subtype)
    msg["Subject"] = subject
    msg["From"] = mail_from
    msg["To"] = ", ".join(to_list)
    if cc_list:
        msg["Cc"] = ", ".join(cc_list)
    msg["Date"] = formatdate(localtime=True)
    for name, value in (custom_headers or {}).items():
        msg[name] = str(value)
    msg.attach(MIMEText(html_content, "html", mime_charset))
    for path in files or ():
        name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                part = MIMEApplication(f.read(), Name=name)
        except OSError as exc:
            raise EmailError(f"e-mail {subject!r}: cannot attach {path}: {exc}") from exc
        part["Content-Disposition"] = f'attachment; filename="{name}"'
        part["Content-ID"] = f"<{name}>"
        msg.attach(part)
    return msg, to_list + cc_list


def send_email(to: Addresses, subject: str, html_content: str,
               files: Iterable[str] | None = None, dryrun: bool = False,
               cc: Addresses = None, bcc: Addresses = None, mime_subtype: str = "mixed",
               mime_charset: str = "utf-8", conn_id: str | None = None,
               custom_headers: Mapping[str, Any] | None = None, *,
               smtp: SmtpSettings | None = None, from_email: str | None = None,
               **kwargs: Any) -> None:
    """Send an HTML e-mail (Airflow 2's ``send_email`` arguments; ``dryrun`` builds it and
    sends nothing). Raises :class:`EmailError`."""
    if conn_id is not None:
        raise EmailError(f"send_email(conn_id={conn_id!r}): an SMTP connection id is not "
                         "supported; Squall sends through the [smtp] settings")
    if smtp is None:
        smtp = Settings.load().smtp
    mail_from = from_email or smtp.smtp_mail_from
    msg, recipients = build_mime_message(
        mail_from=mail_from, to=to, subject=subject, html_content=html_content, files=files,
        cc=cc, mime_subtype=mime_subtype, mime_charset=mime_charset,
        custom_headers=custom_headers)
    recipients += get_email_address_list(bcc)
    if not recipients:
        raise EmailError(f"e-mail {subject!r}: no recipient")
    if dryrun:
        log.info("E-mail %r to %s: dry run, not sent", subject, ", ".join(recipients))
        return
    send_mime_email(smtp, mail_from, recipients, msg)


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.smtp_ssl:
        return smtplib.SMTP_SSL(smtp.smtp_host, smtp.smtp_port, timeout=smtp.smtp_timeout,
                                context=ssl.create_default_context())
    conn = smtplib.SMTP(smtp.smtp_host, smtp.smtp_port, timeout=smtp.smtp_timeout)
    if smtp.smtp_starttls:
        try:
            conn.starttls(context=ssl.create_default_context())
        except BaseException:
            conn.close()
            raise
    return conn


def send_mime_email(smtp: SmtpSettings, mail_from: str, recipients: list[str],
                    msg: MIMEMultipart) -> None:
    """Hand ``msg`` to the SMTP server (see the module docstring for the retries)."""
    where = f"{smtp.smtp_host}:{smtp.smtp_port}"
    subject = msg["Subject"]
    conn: smtplib.SMTP | None = None
    last: BaseException | None = None
    for attempt in range(1, smtp.smtp_retry_limit + 1):
        try:
            conn = _connect(smtp)
            break
        except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS there: retrying won't help
            raise EmailError(f"e-mail {subject!r}: SMTP server {where}: {exc} (set [smtp] "
                             "smtp_starttls = false for a server without TLS)") from exc
        except (OSError, smtplib.SMTPException) as exc:
            last = exc
            log.warning("E-mail %r: cannot connect to SMTP server %s (attempt %d of %d): %s",
                        subject, where, attempt, smtp.smtp_retry_limit, exc)
    if conn is None:
        raise EmailError(f"e-mail {subject!r}: SMTP server {where} unreachable after "
                         f"{smtp.smtp_retry_limit} attempt(s): {last}") from last
    try:
        if smtp.smtp_user and smtp.smtp_password:
            conn.login(smtp.smtp_user, smtp.smtp_password)
        conn.sendmail(mail_from, recipients, msg.as_string())
    except (OSError, smtplib.SMTPException) as exc:
        raise EmailError(f"e-mail {subject!r}: SMTP server {where} refused it: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
    log.info("E-mail %r sent to %s through %s", subject, ", ".join(recipients), where)
