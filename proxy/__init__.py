"""owui-gate's identity-aware reverse proxy in front of OpenWebUI (``owui-proxy``).

The release version is written once, in pyproject.toml; :func:`version` is how every command
(``owui-proxy``, ``owui-provision``, ``owui-demo-idp``) reads it.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "owui-gate"


@functools.cache
def version() -> str:
    """The owui-gate release: the installed package's metadata, else the source tree's
    pyproject.toml (a checkout run with ``PYTHONPATH``, never installed), else ``unknown``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown"
    return str(project.get("version", "unknown"))
