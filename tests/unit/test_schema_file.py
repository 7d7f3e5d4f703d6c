from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schema import build_schema

ROOT = Path(__file__).resolve().parent.parent.parent


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed.strip() == build_schema().as_str().strip(), (
        "schema.graphql is stale: run `brandvx export-schema > schema.graphql`"
    )


def test_export_schema_command_prints_the_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "brandvx", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out.strip() == build_schema().as_str().strip()
