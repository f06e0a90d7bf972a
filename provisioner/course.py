"""The course file: a TOML document validated with pydantic.

Errors name the file, the line when it can be found, and the field, all at once::

    welcome.toml:14: modules[2].id: must be lower-case letters, digits and '-' ...

Pydantic reports a location like ``("modules", 1, "id")``; :func:`_line_of` maps it back
to a line by scanning the TOML text for the table header and then the key, skipping the
inside of multi-line strings (a first message may well contain ``id = ...``).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from provisioner.errors import CourseFileError
from proxy.identity import InvalidIdentity, check_group

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ModelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Markdown = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]


def _group(value: str) -> str:
    """A group name as the proxy passes it on (:func:`proxy.identity.check_group`): compared
    exactly with the identity's groups, so nothing is trimmed or folded here either."""
    try:
        return check_group(value)
    except InvalidIdentity as exc:
        raise ValueError(exc.reason) from exc


Group = Annotated[str, StringConstraints(min_length=1), AfterValidator(_group)]


class CourseInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Slug
    title: Text
    model: ModelId
    # The identity groups the course is for; empty means every user.
    groups: tuple[Group, ...] = ()
    # Where the module threads live: under Archived Chats, or in a sidebar folder named
    # after the course (provisioner/folders.py).
    placement: Literal["archived", "folder"] = "archived"


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
    """``(line number, line)`` for every line outside a multi-line string.

    Lines end at LF (CRLF too) only, as TOML counts them: ``splitlines()`` would also cut
    at U+2028, U+2029 and U+0085, which a TOML string may hold, misnumbering every line
    after it.
    """
    lines: list[tuple[int, str]] = []
    inside: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
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
    code = _code_lines(text)
    dotted = ".".join(part for part in loc if isinstance(part, str))
    for number, line in code:  # a table written under the location's own name
        match = _TABLE.match(line)
        if match and match.group(2) == dotted and "." in dotted:
            return number
    table = loc[0]
    if len(loc) == 1:
        return _top_level_line(code, table)
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
    key = next((part for part in loc[1:] if isinstance(part, str)), None)
    occurrence = -1
    header: int | None = None
    for number, line in code:
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


def _top_level_line(code: list[tuple[int, str]], name: str) -> int | None:
    """The first table header named ``name``, or a key ``name = ...`` before any table."""
    before_tables = True
    for number, line in code:
        match = _TABLE.match(line)
        if match:
            before_tables = False
            if match.group(2) == name:
                return number
        elif before_tables and (key := _KEY.match(line)) and key.group(1) == name:
            return number
    return None


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "(file)"


_MODULES_HINT = "each module is its own [[modules]] table (double brackets), one per thread"

# Pydantic's messages for the mistakes people make in a TOML file, said in TOML's terms.
_FRIENDLY = {
    "string_pattern_mismatch": "must be lower-case letters, digits and '-' (e.g. 'intro-2')",
    "missing": "required, not set",
    "extra_forbidden": "unknown key (a typo?)",
    "too_short": f"at least one module is required: {_MODULES_HINT}",
    "string_type": 'must be text in quotes (e.g. title = "Week 1")',
    "string_too_short": "must not be empty",
    "tuple_type": 'must be a list (e.g. groups = ["year-9", "staff"])',
    "model_type": "must be a table",
    "literal_error": 'must be "archived" (under Archived Chats) or "folder" (a sidebar folder '
    "named after the course)",
}

Loc = tuple[int | str, ...]


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "string_too_long":
        return f"at most {error['ctx']['max_length']} characters"
    return _FRIENDLY.get(kind, str(error["msg"]).removeprefix("Value error, "))


def _layout_problems(data: dict[str, Any]) -> tuple[list[tuple[Loc, str]], set[Loc]]:
    """Tables written the wrong way, in plain sentences, and the locations they explain.

    Pydantic would describe ``[modules]`` (one table instead of an array of tables) as
    "Input should be a valid tuple"; the sentence here says what to write instead. Its
    errors under an explained location are then dropped, so each mistake is said once.
    """
    problems: list[tuple[Loc, str]] = []
    course, modules = data.get("course"), data.get("modules")
    if isinstance(course, list):
        problems.append((("course",), "written as [[course]]: the course is one [course] table"))
    elif course is not None and not isinstance(course, dict):
        problems.append((("course",), "must be a [course] table with id, title and model"))
    if isinstance(modules, dict):
        problems.append((("modules",), f"written as [modules]: {_MODULES_HINT}"))
    elif modules is not None and not (
        isinstance(modules, list) and all(isinstance(item, dict) for item in modules)
    ):
        problems.append((("modules",), f"must be tables: {_MODULES_HINT}"))
    elif modules is None:
        # Modules written somewhere else are that mistake, not "no modules at all".
        elsewhere: list[tuple[Loc, str]] = []
        if isinstance(course, dict) and "modules" in course:
            elsewhere.append(
                (
                    ("course", "modules"),
                    f"modules belong after [course], not in it: {_MODULES_HINT}",
                )
            )
        # Any other top-level table explains the missing modules better than "at least
        # one is required": it is most likely them, under a misspelt name.
        elsewhere += [
            ((key,), _unknown_table(key, value))
            for key, value in data.items()
            if key not in _TOP_LEVEL
        ]
        problems += elsewhere or [(("modules",), _FRIENDLY["too_short"])]
        if elsewhere:
            return problems, {("modules",), *(loc for loc, _ in problems)}
    return problems, {loc for loc, _ in problems}


_TOP_LEVEL = ("course", "modules")


def _unknown_table(key: str, value: Any) -> str:
    """What to say about a top-level name the course file does not know, with a guess."""
    guess = difflib.get_close_matches(key.lower(), _TOP_LEVEL, n=1, cutoff=0.6)
    items = value if isinstance(value, list) else [value]
    holds_modules = any(isinstance(item, dict) and "first_message" in item for item in items)
    if key.lower().startswith("mod") or guess == ["modules"] or holds_modules:
        return f"unknown table (a typo of [[modules]]?): {_MODULES_HINT}"
    if guess == ["course"]:
        return "unknown table (a typo of [course]?): the course is one [course] table"
    return f"unknown table: a course file holds [course] and {_MODULES_HINT}"


def _duplicate_ids(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Repeated module ids, found in the raw data so they are reported with every other error.

    (Pydantic runs the model's own uniqueness check only once every module is valid.)
    """
    modules = data.get("modules")
    if not isinstance(modules, list):
        return []
    first: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, module in enumerate(modules):
        module_id = module.get("id") if isinstance(module, dict) else None
        if not isinstance(module_id, str):
            continue
        if module_id in first:
            problems.append(
                (
                    ("modules", index, "id"),
                    f"module id '{module_id}' is already used by modules[{first[module_id] + 1}]",
                )
            )
        else:
            first[module_id] = index
    return problems


def _invalid_modules_only(error: Any) -> bool:
    """Pydantic's "at least one module" when there are modules, each of them invalid: those
    are reported on their own; telling the author there is none would be wrong."""
    return (
        error["type"] == "too_short"
        and tuple(error["loc"]) == ("modules",)
        and isinstance(error.get("input"), list)
        and len(error["input"]) > 0
    )


def _explained(loc: Loc, covered: set[Loc]) -> bool:
    return any(loc[: len(prefix)] == prefix for prefix in covered)


def parse_course(text: str, source: str) -> Course:
    """Validate a course from TOML text; ``source`` names it in errors.

    Every problem is reported at once, in line order: the layout, pydantic's findings on
    the rest, and repeated module ids.
    """
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CourseFileError([f"{source}: not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # arrays or inline tables nested deeper than tomllib goes
        raise CourseFileError([f"{source}: not valid TOML: nested too deeply"]) from exc
    found, covered = _layout_problems(data)
    found += _duplicate_ids(data)
    try:
        course = Course.model_validate(data)
    except ValidationError as exc:
        found += [
            (tuple(error["loc"]), _message(error))
            for error in exc.errors()
            # Repeated ids are already in ``found``, with every other error.
            if error["type"] != "duplicate_module_id"
            and not _explained(tuple(error["loc"]), covered)
            and not _invalid_modules_only(error)
        ]
    else:
        if not found:
            return course
    located = [(_line_of(text, loc), loc, message) for loc, message in found]
    located.sort(key=lambda item: item[0] or 0)
    raise CourseFileError(
        [
            f"{source}:{line}: {_field_name(loc)}: {message}"
            if line is not None
            else f"{source}: {_field_name(loc)}: {message}"
            for line, loc, message in located
        ]
    )


def load_course(path: Path) -> Course:
    """Read and validate a course file; raise :class:`CourseFileError` naming file/line/field."""
    try:
        # utf-8-sig: editors on Windows save UTF-8 with a byte order mark, which TOML
        # would otherwise report as an invalid statement on line 1.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CourseFileError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except UnicodeDecodeError as exc:
        raise CourseFileError([f"{path}: not UTF-8 text"]) from exc
    return parse_course(text, str(path))
