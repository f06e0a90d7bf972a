"""The course file: a TOML document validated with pydantic.

Errors name the file, the line when it can be found, and the field, all at once::

    welcome.toml:14: modules[2].id: must be lower-case letters, digits and '-' ...

Pydantic reports a location like ``("modules", 1, "id")``; :func:`_line_of` maps it back
to a line by scanning the TOML text for the table header and then the key, skipping the
inside of multi-line strings (a first message may well contain ``id = ...``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from provisioner.errors import CourseFileError
from proxy.identity import MAX_GROUP

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ModelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Markdown = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
# What the proxy passes on as a group (proxy.identity.parse_groups): no comma, no control
# character, at most MAX_GROUP characters, surrounding blanks dropped.
Group = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_GROUP, pattern=r"^[^,\x00-\x1f\x7f]+$"
    ),
]


class CourseInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Slug
    title: Text
    model: ModelId
    # The identity groups the course is for; empty means every user.
    groups: tuple[Group, ...] = ()


class Module(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Slug
    title: Text
    first_message: Markdown
    model: ModelId | None = None

    @field_validator("first_message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Course(BaseModel):
    """A whole course file: ``[course]`` and one ``[[modules]]`` table per thread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    course: CourseInfo
    modules: tuple[Module, ...] = Field(min_length=1)

    @field_validator("modules")
    @classmethod
    def _unique_ids(cls, modules: tuple[Module, ...]) -> tuple[Module, ...]:
        first: dict[str, int] = {}
        for index, module in enumerate(modules):
            if module.id in first:
                # The index travels in ``ctx`` so the error can point at the repeated line.
                raise PydanticCustomError(
                    "duplicate_module_id",
                    "module id '{id}' is already used by modules[{first}]",
                    {"id": module.id, "first": first[module.id] + 1, "index": index},
                )
            first[module.id] = index
        return modules

    def model_for(self, module: Module) -> str:
        return module.model or self.course.model


_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _code_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` for every line outside a multi-line string."""
    lines: list[tuple[int, str]] = []
    inside: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if inside is None:
            lines.append((number, line))
        for quote in ('"""', "'''"):
            if inside in (None, quote) and line.count(quote) % 2 == 1:
                inside = quote if inside is None else None
                break
    return lines


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The line a pydantic location points at: the key if present, else its table header."""
    if not loc or not isinstance(loc[0], str):
        return None
    table = loc[0]
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
    key = next((part for part in loc[1:] if isinstance(part, str)), None)
    occurrence = -1
    header: int | None = None
    for number, line in _code_lines(text):
        match = _TABLE.match(line)
        if match:
            if match.group(2) == table:
                occurrence += 1
                header = number if occurrence == index else header
            elif header is not None and occurrence >= index:
                break  # the next table: the key was not in ours
            continue
        if header is not None and occurrence == index and key is not None:
            key_match = _KEY.match(line)
            if key_match and key_match.group(1) == key:
                return number
    return header


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "(file)"


_FRIENDLY = {
    "string_pattern_mismatch": "must be lower-case letters, digits and '-' (e.g. 'intro-2')",
    "missing": "required, not set",
    "extra_forbidden": "unknown key (a typo?)",
    "too_short": "at least one [[modules]] table is required",
}


def parse_course(text: str, source: str) -> Course:
    """Validate a course from TOML text; ``source`` names it in errors."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CourseFileError([f"{source}: not valid TOML: {exc}"]) from exc
    try:
        return Course.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = _FRIENDLY.get(error["type"], error["msg"].removeprefix("Value error, "))
            if error["type"] == "string_pattern_mismatch" and "groups" in loc:
                message = "a group name must not hold a comma or a control character"
            if error["type"] == "duplicate_module_id":
                loc = ("modules", error["ctx"]["index"], "id")
            elif loc == ("modules",) and error["type"] == "missing":
                message = _FRIENDLY["too_short"]
            line = _line_of(text, loc)
            where = f"{source}:{line}" if line is not None else source
            problems.append(f"{where}: {_field_name(loc)}: {message}")
        raise CourseFileError(problems) from exc


def load_course(path: Path) -> Course:
    """Read and validate a course file; raise :class:`CourseFileError` naming file/line/field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CourseFileError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except UnicodeDecodeError as exc:
        raise CourseFileError([f"{path}: not UTF-8 text"]) from exc
    return parse_course(text, str(path))
