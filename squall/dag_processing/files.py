"""Which files of a DAG folder are DAG files.

``*.py`` files under the folder, recursively, except those in hidden directories or
``__pycache__``, those matched by a pattern of a ``.squallignore`` file (in the file's folder
or one above it; one regular expression a line by default, as Airflow's ``.airflowignore``,
or gitignore-style globs), and those whose text does not contain ``dag`` in any case
(Airflow's "safe mode" heuristic).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

IgnoreSyntax = Literal["regexp", "glob"]

DEFAULT_IGNORE_FILE = ".squallignore"


class _IgnoreRule:
    """One pattern of an ignore file, matched against paths relative to the file's folder."""

    def __init__(self, regex: re.Pattern[str], base: str, *, search: bool,
                 negated: bool = False, dirs_only: bool = False) -> None:
        self.regex = regex
        self.base = base
        self.search = search
        self.negated = negated
        self.dirs_only = dirs_only

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.dirs_only and not is_dir:
            return False
        rel = os.path.relpath(path, self.base).replace(os.sep, "/")
        if self.search:
            return self.regex.search(rel) is not None
        return self.regex.fullmatch(rel) is not None


def _glob_to_regex(pattern: str) -> str:
    """A gitignore-style glob (``*``, ``?``, ``[...]``, ``**``) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _parse_ignore_file(path: Path, syntax: IgnoreSyntax) -> list[_IgnoreRule]:
    base = str(path.parent)
    rules: list[_IgnoreRule] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        log.warning("cannot read ignore file %s: %s", path, exc)
        return rules
    for raw in lines:
        if syntax == "regexp":
            line = re.sub(r"\s*#.*", "", raw).strip()
            if not line:
                continue
            try:
                rules.append(_IgnoreRule(re.compile(line), base, search=True))
            except re.error as exc:
                log.warning("ignoring invalid pattern %r in %s: %s", line, path, exc)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        dirs_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _glob_to_regex(line.lstrip("/"))
        regex = body if anchored else f"(?:.*/)?{body}"
        rules.append(_IgnoreRule(re.compile(regex), base, search=False, negated=negated,
                                 dirs_only=dirs_only))
    return rules


def _ignored(path: str, is_dir: bool, rules: list[_IgnoreRule]) -> bool:
    ignored = False
    for rule in rules:
        if rule.matches(path, is_dir):
            ignored = not rule.negated
    return ignored


def _might_contain_dag(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return b"dag" in fh.read().lower()
    except OSError:
        return False


def list_dag_files(
    folder: str | os.PathLike[str],
    ignore_file_name: str = DEFAULT_IGNORE_FILE,
    syntax: IgnoreSyntax = "regexp",
    *,
    safe_mode: bool = True,
) -> list[Path]:
    """The DAG files under ``folder`` (a single ``.py`` file counts as itself), sorted.

    See the module docstring for what is skipped. ``syntax`` is the pattern syntax of the
    ignore files: ``"regexp"`` (each line a regular expression searched for in the path
    relative to the ignore file's folder) or ``"glob"`` (gitignore-style).
    """
    if syntax not in ("regexp", "glob"):
        raise ValueError(f"unknown ignore file syntax {syntax!r} (regexp or glob)")
    root = Path(os.path.abspath(folder))
    if root.is_file():
        return [root] if root.suffix == ".py" else []
    if not root.is_dir():
        return []
    found: list[Path] = []
    rules_by_dir: dict[str, list[_IgnoreRule]] = {}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        parent = os.path.dirname(dirpath)
        rules = list(rules_by_dir.get(parent, [])) if dirpath != str(root) else []
        if ignore_file_name in filenames:
            rules.extend(_parse_ignore_file(Path(dirpath, ignore_file_name), syntax))
        rules_by_dir[dirpath] = rules
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d != "__pycache__"
            and not _ignored(os.path.join(dirpath, d), True, rules)
        )
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if _ignored(path, False, rules):
                continue
            if safe_mode and not _might_contain_dag(Path(path)):
                continue
            found.append(Path(path))
    return sorted(found)
