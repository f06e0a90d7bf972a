"""A sign-in that may still be running at OpenWebUI is not sent again beside it (round 5).

The transport retried every call after its own read timeout, and after a 504 (the proxy
gave up waiting for OpenWebUI): for a first sign-in that is a second sign-in of the same
new email while the first may still be writing the account. Round 4 showed that two
colliding sign-ins of one email leave an account OpenWebUI refuses for ever. A sign-in
that went unanswered now ends as :class:`Unavailable` (the receiver's 503 with
Retry-After, bulk's failed person to run again), and the same email is not signed in again
before the unanswered call has had as long again to finish.
"""

from __future__ import annotations

import pytest

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.errors import Unavailable
from provisioner.settings import Settings
from tests.provisioner.conftest import SERVICE_TOKEN
from tests.provisioner.fake_owui import FakeOpenWebUI

SIGNIN = "/api/v1/auths/signin"


async def test_a_sign_in_past_the_read_timeout_is_not_sent_again(
    fake: FakeOpenWebUI, settings: Settings
) -> None:
    fake.slow("POST", SIGNIN, 0.6)  # OpenWebUI under SQLite contention
    settings = settings.model_copy(update={"request_timeout_s": 0.2})
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        with pytest.raises(Unavailable) as caught:
            await api.signin("ada@example.edu", "Ada")
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0
        assert fake.count("POST", SIGNIN) == 1
        # A redelivery at once does not sign in beside the call that may still run...
        with pytest.raises(Unavailable):
            await api.signin("ada@example.edu", "Ada")
        assert fake.count("POST", SIGNIN) == 1
        # ...while another person is not held up by it.
        fake.delays.clear()
        await api.signin("bob@example.edu", "Bob")
        assert fake.count("POST", SIGNIN) == 2


async def test_a_sign_in_the_proxy_timed_out_504_is_not_sent_again(
    fake: FakeOpenWebUI, settings: Settings
) -> None:
    fake.fail("POST", SIGNIN, 504, times=1, body={"error": "upstream timed out", "request_id": "r"})
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        with pytest.raises(Unavailable):
            await api.signin("ada@example.edu", "Ada")
    assert fake.count("POST", SIGNIN) == 1


async def test_a_sign_in_refused_before_it_ran_is_still_retried(
    fake: FakeOpenWebUI, settings: Settings
) -> None:
    """429, and OpenWebUI's own 503 (the sign-in ended, in failure), are safe to repeat."""
    fake.fail("POST", SIGNIN, 429, times=1, headers={"Retry-After": "0"})
    fake.fail("POST", SIGNIN, 503, times=1, body={"detail": "temporarily unavailable"})
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        session = await api.signin("ada@example.edu", "Ada")
    assert session.email == "ada@example.edu"
    assert fake.count("POST", SIGNIN) == 3
