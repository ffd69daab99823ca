"""Finding the external delivery tools (helm, kubernetes-validate, promtool, ...) for tests.

Tools come from PATH or from ``.ci/tools`` (where ``.ci/install-tools.sh`` puts them). A missing
tool skips the test with the reason, or fails it under ``CHARON_REQUIRE_TOOLS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
CI_TOOLS = ROOT / ".ci" / "tools"
CHART = ROOT / "charts" / "charon"


def find_tool(name: str) -> str | None:
    """Path of ``name`` in .ci/tools or on PATH, or None."""
    local = CI_TOOLS / name
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def tool(name: str, why: str = "") -> str:
    """Path of ``name``; skips (or fails under CHARON_REQUIRE_TOOLS=1) when it is missing."""
    path = find_tool(name)
    if path is None:
        skip_or_fail(f"{name} not found on PATH or in .ci/tools (run .ci/install-tools.sh){why}")
        raise AssertionError("unreachable")  # skip_or_fail raises
    return path


def run(*cmd: str, timeout: float = 60.0, cwd: Path = ROOT, check: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """Run a tool; the result keeps stdout and stderr for assertions and messages."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
