"""The README's shell commands work where Squall keeps its files: under ``$SQUALL_HOME``
when it is set, ``~/squall`` otherwise (issue 22 item 8)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


def test_no_command_hardcodes_the_default_home() -> None:
    assert [line for line in _shell_lines() if re.search(r"~/squall|\$HOME/squall", line)
            and "SQUALL_HOME" not in line] == []


def test_the_password_command_reads_the_file_of_squall_home(tmp_path: Path) -> None:
    (line,) = [line for line in _shell_lines() if line.startswith("PASS=")]
    home, squall_home = tmp_path / "user", tmp_path / "elsewhere"
    for folder, password in ((home / "squall", "in-default-home"),
                             (squall_home, "in-squall-home")):
        folder.mkdir(parents=True)
        (folder / "standalone_admin_password.txt").write_text(password + "\n")

    def password(**env: str) -> str:
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **env}
        return subprocess.run(["bash", "-c", f'{line}\nprintf %s "$PASS"'], env=environ,
                              capture_output=True, text=True, check=True).stdout

    assert password(SQUALL_HOME=str(squall_home)) == "in-squall-home"
    assert password() == "in-default-home"
