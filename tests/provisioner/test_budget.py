"""The call budget: what a new user, a provisioned user and a run cost, counted at the fake."""

from __future__ import annotations

from provisioner.bulk import run_bulk
from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import build_chat
from provisioner.users import UserRow
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock


def calls_of(fake: FakeOpenWebUI, email: str | None) -> list[str]:
    return [f"{c.method} {c.path}" for c in fake.calls if c.act_as == email]


def shapes(calls: list[str]) -> list[str]:
    """Calls with chat ids replaced, so they can be compared to a fixed list."""
    out = []
    for call in calls:
        method, path = call.split(" ", 1)
        parts = path.split("/")
        if len(parts) > 4 and parts[3] == "chats" and parts[4] not in ("new", "all", "list"):
            parts[4] = "{id}"
        out.append(f"{method} {'/'.join(parts)}")
    return out


async def test_a_new_user_costs_sign_in_two_looks_and_two_calls_a_module(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Sign-in, one look, create + archive per module, one look that is also the final one."""
    await provisioner.provision_user([course], "first@example.edu")  # the run reads the config
    await provisioner.provision_user([course], "ada@example.edu")

    assert shapes(calls_of(fake, "ada@example.edu")) == [
        "POST /api/v1/auths/signin",
        "GET /api/v1/chats/all",
        "POST /api/v1/chats/new",
        "POST /api/v1/chats/{id}/archive",
        "POST /api/v1/chats/new",
        "POST /api/v1/chats/{id}/archive",
        "GET /api/v1/chats/all",
    ]
    assert len(calls_of(fake, "ada@example.edu")) == 3 + 2 * len(course.modules)


async def test_a_provisioned_user_costs_sign_in_and_one_look(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    await provisioner.provision_user([course], "ada@example.edu")
    before = len(fake.calls)
    results = await provisioner.provision_user([course], "ada@example.edu")

    assert {r.status for r in results} == {"existing"}
    assert shapes([f"{c.method} {c.path}" for c in fake.calls[before:]]) == [
        "POST /api/v1/auths/signin",
        "GET /api/v1/chats/all",
    ]


async def test_threads_are_confirmed_by_their_marker_without_reading_them_again(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Found threads are not read one by one; one left unarchived (a crash) is read only
    right before its toggle, as other processes may be archiving it too."""
    user = fake.add_user("ada@example.edu")
    left = fake.add_chat(user, build_chat(course, course.modules[0]), created_at=1)
    fake.add_chat(user, build_chat(course, course.modules[1]), archived=True, created_at=1)

    await provisioner.provision_user([course], "ada@example.edu")

    assert left.archived
    reads = [c.path for c in fake.calls if c.method == "GET" and c.path.count("/") == 4]
    assert [p for p in reads if not p.endswith(("/all", "/list", "/archived"))] == [
        f"/api/v1/chats/{left.id}"
    ]
    assert fake.count("POST", r"/api/v1/chats/[^/]+/archive") == 1


async def test_the_config_is_read_once_a_run(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    rows = [UserRow(n, f"u{n}@example.edu", None) for n in range(1, 6)]
    failures = await run_bulk(provisioner, [course], rows, concurrency=2, emit=lambda _: None)

    assert failures == []
    assert fake.count("GET", "/api/config") == 1


async def test_a_user_waiting_out_the_settle_pause_gives_its_place_to_the_next(
    settings: Settings, fake: FakeOpenWebUI, course: Course
) -> None:
    """With one user at a time, the second signs in while the first waits to look again.

    (A clock 10x real time: the pause is 0.2 s, far longer than the first user's calls.)"""
    clock = FastClock(10)
    fake.clock = clock
    rows = [UserRow(n, f"u{n}@example.edu", None) for n in (1, 2)]
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        provisioner = Provisioner(api, settings, sleep=clock.sleep)
        await run_bulk(provisioner, [course], rows, concurrency=1, emit=lambda _: None)

    order = [(c.act_as, c.path) for c in fake.calls if c.act_as is not None]
    second_signin = order.index(("u2@example.edu", "/api/v1/auths/signin"))
    first_last_look = len(order) - 1 - order[::-1].index(("u1@example.edu", "/api/v1/chats/all"))
    assert second_signin < first_last_look


async def test_concurrency_still_bounds_the_requests_in_flight(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """Waiting users give their place away, but never more than N requests run at once."""
    fake.slow("POST", "/api/v1/chats/new", 0.01)
    fake.slow("POST", "/api/v1/auths/signin", 0.01)
    rows = [UserRow(n, f"u{n}@example.edu", None) for n in range(1, 9)]
    failures = await run_bulk(provisioner, [course], rows, concurrency=3, emit=lambda _: None)

    assert failures == []
    assert 2 <= fake.peak_in_flight <= 3
