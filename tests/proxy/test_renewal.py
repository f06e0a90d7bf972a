"""One session's forward-auth calls take turns; a renewal stands in for the old cookie."""

from __future__ import annotations

import asyncio

import pytest

from proxy.auth.renewal import Renewals, apply_set_cookies
from tests.holding import held_elsewhere

PAST = "Thu, 01 Jan 1970 00:00:00 GMT"
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"

APPLY_ROWS = [
    (
        "a value replaced in place",
        "a=1; s=old; b=2",
        ["s=new; Path=/; HttpOnly"],
        "a=1; s=new; b=2",
    ),
    ("a new cookie goes last", "a=1", ["s=new; Path=/"], "a=1; s=new"),
    ("Max-Age=0 deletes", "a=1; s=old", ["s=; Path=/; Max-Age=0"], "a=1"),
    ("a negative Max-Age deletes", "s=old; a=1", ["s=x; Max-Age=-1"], "a=1"),
    ("Expires in the past deletes", "s=old", [f"s=; Expires={PAST}"], ""),
    ("Expires in the future keeps", "s=old", [f"s=new; Expires={FUTURE}"], "s=new"),
    ("Max-Age wins over Expires", "s=old", [f"s=new; Expires={PAST}; Max-Age=60"], "s=new"),
    ("unreadable attributes ignored", "s=old", ["s=new; Max-Age=soon; Expires=never"], "s=new"),
    ("not a cookie: ignored", "s=old", ["no-equals-sign", "=nameless"], "s=old"),
    (
        "chunks: the count and the parts",
        "session_chunks=2; session_0=a; session_1=b",
        ["session_chunks=3", "session_0=x", "session_1=y", "session_2=z"],
        "session_chunks=3; session_0=x; session_1=y; session_2=z",
    ),
    ("values kept byte for byte", 's="q v"; t=a=b', ["u=="], 's="q v"; t=a=b; u=='),
]


@pytest.mark.parametrize(
    ("cookie", "set_cookies", "expected"),
    [r[1:] for r in APPLY_ROWS],
    ids=[r[0] for r in APPLY_ROWS],
)
def test_the_cookie_a_browser_sends_after_an_answer(cookie, set_cookies, expected) -> None:
    assert apply_set_cookies(cookie, set_cookies) == expected


def test_renewals_are_followed_while_they_hold_and_bounded() -> None:
    now = [0.0]
    renewals = Renewals(hold_s=30, size=3, clock=lambda: now[0])
    renewals.renewed("s=1", ["s=2"])
    renewals.renewed("s=2", ["s=3"])
    assert renewals.current("s=1") == "s=3"  # renewal of a renewal
    assert renewals.current("s=9") == "s=9"
    renewals.renewed("s=3", ["s=3; Path=/"])  # the same value again: nothing to remember
    assert len(renewals) == 2
    now[0] += 30
    assert renewals.current("s=1") == "s=1"  # past the hold: the old cookie is itself again
    for n in range(10, 15):
        renewals.renewed(f"s={n}", [f"s={n + 100}"])
    assert len(renewals) == 3
    assert renewals.current("s=10") == "s=10"  # the oldest went first


def test_a_long_chain_of_renewals_is_followed_to_its_end() -> None:
    """A service that renews on every answer renews one session dozens of times in one page
    load; a request still carrying the first cookie is asked about the last."""
    renewals = Renewals()
    for n in range(100):
        renewals.renewed(f"s={n}", [f"s={n + 1}"])
    assert renewals.current("s=0") == "s=100"
    assert renewals.current("s=37") == "s=100"
    renewals.renewed("s=100", ["s=101"])
    assert renewals.current("s=0") == "s=101"


def test_the_session_is_the_auth_services_cookies_whatever_else_rides_along() -> None:
    """OpenWebUI's own cookies change independently, and a browser may order cookies its
    own way: the session is the cookies the auth service set, nothing else."""
    renewals = Renewals()
    renewals.renewed("token=A; s_0=x; s_1=y", ["s_0=x2", "s_1=y2"])
    assert renewals.current("s_1=y; token=B; s_0=x; lang=en") == "token=B; lang=en; s_0=x2; s_1=y2"
    assert renewals.current("token=B") == "token=B"  # no session in it: nothing to renew


def test_a_renewal_back_to_an_earlier_cookie_does_not_loop() -> None:
    renewals = Renewals()
    renewals.renewed("s=a", ["s=b"])
    renewals.renewed("s=b", ["s=a"])
    assert renewals.current("s=a") in ("s=a", "s=b")


async def test_calls_with_one_session_take_turns_and_follow_its_renewal() -> None:
    renewals = Renewals()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with renewals.turn("s=old") as sent:
            order.append(f"first:{sent}")
            first_in.set()
            await release.wait()
            renewals.renewed(sent, ["s=new"])

    async def second() -> None:
        async with renewals.turn("s=old") as sent:
            order.append(f"second:{sent}")

    async def other() -> None:
        async with renewals.turn("t=other") as sent:
            order.append(f"other:{sent}")

    one = asyncio.create_task(first())
    await first_in.wait()
    two = asyncio.create_task(second())
    three = asyncio.create_task(other())
    await three  # another session does not wait
    await asyncio.sleep(0.01)
    assert order == ["first:s=old", "other:t=other"]  # the second waits for the first
    release.set()
    await asyncio.gather(one, two)
    assert order == ["first:s=old", "other:t=other", "second:s=new"]
    assert renewals.turns == 0


async def test_a_call_given_up_while_waiting_leaves_no_turn_behind() -> None:
    renewals = Renewals()

    async def wait() -> None:
        async with renewals.turn("s=1"):
            raise AssertionError("never reached")

    async with held_elsewhere(renewals.turn("s=1")):
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert renewals.turns == 0
