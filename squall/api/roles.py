"""The API's roles by name, in their own module: `squall users create --help` lists them
without loading the database models (issue 26)."""

from __future__ import annotations

ROLES = ("viewer", "op", "admin")
