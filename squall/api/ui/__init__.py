"""The web UI (being built: issue 12): pages and static files served by the API process."""

from fastapi import APIRouter

router = APIRouter()
