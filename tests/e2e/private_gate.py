"""A gate of a test's own in front of the session's real OpenWebUI.

The tests that stop a piece on purpose (the auth service, OpenWebUI's reachability) must not
take the session's shared proxy and IdP down with them: they get their own demo IdP, proxy
and webhook receiver, on ports of their own, with the settings they need, sharing only
OpenWebUI and the model server (which they never stop).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from demo.stack import Stack, StackConfig, StackError
from tests.e2e.conftest import (
    COURSE_FILE,
    GROUP_COURSE_FILE,
    OPERATOR_EMAIL,
    fail,
)


@contextmanager
def private_gate(
    shared: Stack,
    state_dir: Path,
    *,
    proxy_env: Mapping[str, str] | None = None,
    webhook: bool = True,
) -> Iterator[Stack]:
    """IdP, proxy (and receiver) of their own, against ``shared``'s OpenWebUI."""
    shutil.rmtree(state_dir, ignore_errors=True)
    gate = Stack(
        StackConfig(
            state_dir=state_dir,
            public_port=0,
            course=COURSE_FILE,
            extra_courses=(GROUP_COURSE_FILE,),
            operator_email=OPERATOR_EMAIL,
            proxy_env=dict(proxy_env or {}),
        )
    )
    problem = None
    try:
        gate.prepare()
        gate.openwebui, gate.model_url = shared.openwebui, shared.model_url
        gate.start_idp()
        gate.start_proxy()
        if webhook:
            gate.start_webhook()
    except StackError as exc:
        problem = f"could not start the test's own gate: {exc}"
    except BaseException:
        _stop(gate)
        raise
    if problem is not None:
        _stop(gate)
        fail(problem)
    try:
        yield gate
    finally:
        _stop(gate)


def _stop(gate: Stack) -> None:
    gate.openwebui = None  # shared: the session's, never stopped here
    gate.stop()
