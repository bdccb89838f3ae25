"""The README's library example runs as written and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_library_example_runs(tmp_path: Path) -> None:
    """The first python block of the README is a working program (run in a scratch directory)."""
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert match is not None
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "TCP 8080 -> 198.18.0.10 80"
    assert lines[1] == "UDP 51413 -> 198.18.0.11 51413"
    assert lines[2].startswith("MappingAdded(")
    assert (tmp_path / "state" / "igd.sqlite3").exists()
