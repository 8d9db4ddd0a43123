"""What every request of the API shares: the settings, the database, the credential memo."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from squall.api.passwords import CheckedCredentials
from squall.common.db import SessionFactory, session_scope
from squall.common.settings import Settings


@dataclass
class ApiState:
    settings: Settings
    session_factory: SessionFactory
    secret_key: str
    credentials: CheckedCredentials = field(default_factory=CheckedCredentials)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.squall
    return state


def db(request: Request) -> Iterator[Session]:
    """A session for the request, committed when the route returns without error."""
    with session_scope(api_state(request).session_factory) as session:
        yield session


#: a route parameter: the request's database session, committed before the answer is sent
#: (``scope="function"``; by default FastAPI ends a dependency after sending the answer, so
#: a client's next request could miss what it was just told was written, and a failed
#: commit would follow a 200)
DB = Annotated[Session, Depends(db, scope="function")]
