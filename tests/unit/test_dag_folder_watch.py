"""squall.dag_processing.watch: the paths under the DAG folder that changed, by file-system
notifications or by a scan, and the fall-back from one to the other (ADR 32)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squall.dag_processing.watch import FolderChanges, network_file_system, scan_folder
from tests.support.services import wait_until

IGNORE = ".squallignore"


def collected(changes: FolderChanges, until: set[Path]) -> set[Path]:
    """Collect until ``until`` was seen (or the deadline); everything collected."""
    seen: set[Path] = set()

    def done() -> bool:
        paths, _ = changes.collect(float("inf"))  # a scan is always due
        seen.update(paths)
        return until <= seen

    wait_until(done, 30, interval=0.05, message=f"{until} among {seen}")
    return seen


@pytest.fixture(params=["notify", "poll"])
def changes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FolderChanges]:
    (tmp_path / "dags").mkdir()
    watched = FolderChanges(tmp_path / "dags", watch=request.param == "notify",
                            poll_interval=0.05, ignore_file_name=IGNORE)
    assert watched.mode == request.param
    yield watched
    watched.close()


def test_new_changed_and_removed_files(changes: FolderChanges) -> None:
    folder = changes.root
    new = folder / "new.py"
    new.write_text("# dag\n")
    assert new in collected(changes, {new})
    os.utime(new, ns=(1, 1))  # changed, whatever the clock's resolution
    assert new in collected(changes, {new})
    (folder / "sub").mkdir()
    nested = folder / "sub" / "nested.py"
    nested.write_text("# dag\n")
    assert nested in collected(changes, {nested})
    new.unlink()
    assert new in collected(changes, {new})
    (folder / IGNORE).write_text("nested\n")
    assert folder / IGNORE in collected(changes, {folder / IGNORE})


def test_the_scan_skips_hidden_folders_and_caches(tmp_path: Path) -> None:
    for name in ("a.py", ".hidden/b.py", "__pycache__/c.py", "d/e.py", "d/notes.txt",
                 ".f.py", IGNORE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("dag")
    assert set(scan_folder(tmp_path, IGNORE)) == {
        str(tmp_path / "a.py"), str(tmp_path / "d"), str(tmp_path / "d/e.py"),
        str(tmp_path / IGNORE)}


class Broken:
    """A RustNotify whose watch() fails (as on an inotify queue overflow or a bug)."""

    def __init__(self, notify: Any) -> None:
        self.notify = notify

    def watch(self, *args: Any) -> Any:
        raise RuntimeError("broken on purpose")

    def close(self) -> None:
        self.notify.close()


def test_a_watcher_that_dies_falls_back_to_the_scan(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    changes = FolderChanges(folder, watch=True, poll_interval=0.05, ignore_file_name=IGNORE)
    try:
        assert changes.mode == "notify"
        watcher = changes._watcher
        assert watcher is not None
        watcher._notify = Broken(watcher._notify)  # its next watch() raises in the thread
        (folder / "wake.py").write_text("# dag\n")  # ends the watch() under way
        everything = False

        def fell_back() -> bool:
            nonlocal everything
            everything = changes.collect(float("inf"))[1] or everything
            return changes.mode == "poll"

        with caplog.at_level(logging.WARNING, logger="squall.dag_processing.watch"):
            wait_until(fell_back, 30, interval=0.05, message="the fall-back to the scan")
        assert everything  # the processor lists the folder again
        assert "the notification watcher stopped" in caplog.text
        new = folder / "later.py"
        new.write_text("# dag\n")
        assert new in collected(changes, {new})
        changes.retry()  # at the next full listing: notifications again
        assert changes.mode == "notify"
    finally:
        changes.close()


def test_a_replaced_folder_is_watched_anew(tmp_path: Path) -> None:
    """git-sync's way: the DAG folder is a symlink swapped to a new checkout."""
    (tmp_path / "rev1").mkdir()
    (tmp_path / "rev2").mkdir()
    link = tmp_path / "dags"
    link.symlink_to(tmp_path / "rev1")
    changes = FolderChanges(link, watch=True, poll_interval=0.05, ignore_file_name=IGNORE)
    try:
        assert changes.collect(0.0) == (set(), False)
        swap = tmp_path / "swap"
        swap.symlink_to(tmp_path / "rev2")
        swap.replace(link)
        assert changes.collect(0.0)[1]  # everything may have changed
        assert changes.mode == "notify"
        new = link / "new.py"
        new.write_text("# dag\n")
        assert new in collected(changes, {new})
    finally:
        changes.close()


def test_a_missing_folder_is_scanned_until_it_appears(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    changes = FolderChanges(folder, watch=True, poll_interval=0.05, ignore_file_name=IGNORE)
    try:
        assert changes.mode == "poll"
        folder.mkdir()
        assert changes.collect(0.0)[1]
        assert changes.mode == "notify"
    finally:
        changes.close()


def test_network_file_systems(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n"
                      "server:/export /mnt/dags nfs4 rw 0 0\n"
                      "/dev/sdb1 /mnt/dags/local xfs rw 0 0\n")
    assert network_file_system(Path("/mnt/dags/team"), str(mounts)) == "nfs4"
    assert network_file_system(Path("/mnt/dags/local/x"), str(mounts)) is None
    assert network_file_system(Path("/mnt/dagsx"), str(mounts)) is None
    assert network_file_system(Path("/opt"), str(tmp_path / "no-such-file")) is None
