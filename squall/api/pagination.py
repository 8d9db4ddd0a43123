"""``limit`` / ``offset`` as Airflow's API takes them: ``limit`` defaults to ``[api]
page_size`` and may not pass ``[api] maximum_page_limit``; lists answer
``{"<items>": [...], "total_entries": N}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from squall.api.problems import bad_request
from squall.api.state import api_state


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.limit(self.limit).offset(self.offset)


def page(request: Request,
         limit: Annotated[int | None, Query(ge=1, description="items per page")] = None,
         offset: Annotated[int, Query(ge=0, le=2 ** 63 - 1,
                                      description="items to skip")] = 0) -> Page:
    settings = api_state(request).settings.api
    wanted = settings.page_size if limit is None else limit
    if wanted > settings.maximum_page_limit:
        raise bad_request(f"limit {wanted} is over the maximum of "
                          f"{settings.maximum_page_limit} ([api] maximum_page_limit)")
    return Page(limit=wanted, offset=offset)


def total(session: Session, stmt: Select[Any]) -> int:
    """How many rows ``stmt`` selects (without its ordering, limit and offset)."""
    counted = stmt.order_by(None).limit(None).offset(None)
    return int(session.scalar(select(func.count()).select_from(counted.subquery())) or 0)


def order_by(stmt: Select[Any], value: str | None, columns: dict[str, Any],
             default: str) -> Select[Any]:
    """Airflow's ``order_by``: a column name, ``-`` in front for descending; an unknown
    name is a 400 listing the known ones."""
    name = value or default
    descending = name.startswith("-")
    key = name.lstrip("-")
    column = columns.get(key)
    if column is None:
        raise bad_request(f"order_by {key!r} is not one of: {', '.join(sorted(columns))}")
    return stmt.order_by(column.desc() if descending else column.asc())


#: a route parameter: the requested page
Paged = Annotated[Page, Depends(page)]
#: a route parameter: Airflow's ``order_by``
OrderBy = Annotated[str | None, Query(alias="order_by")]
