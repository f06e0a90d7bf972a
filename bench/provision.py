"""Case 6: provisioning N users x M modules through the internal listener versus direct."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Run


def compare(
    run: Run, direct_url: str, internal_url: str | None, token_file: Path
) -> dict[str, Any]:
    return {"skipped": "the provisioner's Python API has not landed yet"}
