"""deploy/container/: the image build file's promises, read statically (no container runtime).

Non-root at run time, a health check on the admin listener, every dependency from the lock
with its hashes enforced, base images pinned, and a lock that covers exactly the runtime
dependencies pyproject.toml declares, at versions pyproject.toml accepts.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.edge import REPO

CONTAINER = REPO / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
LOCK = CONTAINER / "requirements.lock"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(found) if keyword == "FROM")
    return found[last_from:]


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    """Package -> (exact version, its sha256 hashes) from the lock."""
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, *options = line.split(" --hash=")
        req = Requirement(requirement.strip())
        (spec,) = req.specifier
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = (spec.version, [o.strip() for o in options])
    return pins


def test_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_health_check_asks_the_admin_listeners_healthz() -> None:
    checks = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "CMD" in checks[0]
    assert "/healthz" in checks[0]
    assert "OWUI_PROXY_ADMIN_LISTEN" in checks[0]


def test_dependencies_come_from_the_lock_with_hashes_enforced() -> None:
    installs = [args for keyword, args in instructions() if keyword == "RUN" and "pip" in args]
    from_lock = [args for args in installs if "requirements.lock" in args]
    assert len(from_lock) == 1
    assert "--require-hashes" in from_lock[0]
    assert "--only-binary=:all:" in from_lock[0]
    # owui-gate itself goes in without pulling anything that is not in the lock.
    for args in installs:
        if args not in from_lock:
            assert "--no-deps" in args, args


def test_base_images_are_pinned_releases() -> None:
    images = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert images
    for image in images:
        tag = image.partition(":")[2]
        assert tag, f"{image}: no tag means latest"
        assert tag != "latest"
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: a moving tag"


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = lock_pins()
    for line in pyproject["project"]["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {LOCK.name}: regenerate the lock"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (req, version)
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
