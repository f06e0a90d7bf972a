"""The one table of answers to upstream failures (``proxy/upstream_errors.py``)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from proxy import h1
from proxy.errors import UpstreamRefused
from proxy.metrics import Metrics
from proxy.upstream_errors import (
    MID_BODY_KIND,
    TABLE,
    Stage,
    UpstreamBrokeOff,
    markdown_table,
    translate,
)
from tests.proxy.test_process import _metric

DOC = Path(__file__).parents[2] / "docs" / "proxy.md"


def test_docs_show_the_table_the_code_applies() -> None:
    assert markdown_table() in DOC.read_text(), (
        "docs/proxy.md's 'Upstream failures' table is out of date: replace it with "
        'python -c "from proxy.upstream_errors import markdown_table; print(markdown_table())"'
    )


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (h1.ConnectFailed, 502),
        (h1.ConnectTimeout, 504),
        (h1.ConnectionBroke, 502),
        (h1.ProtocolError, 502),
        (h1.UploadStalled, 504),
        (h1.HeadTimeout, 504),
        (h1.BodyStalled, 504),
        (h1.BodyBrokeOff, 502),
    ],
)
def test_before_the_response_each_failure_is_its_status(failure, status) -> None:
    answer = translate(failure("what happened"), Stage.BEFORE_RESPONSE)
    assert getattr(answer, "status", None) == status


def test_every_failure_h1_raises_has_an_answer_before_the_response() -> None:
    def subclasses(cls: type) -> set[type]:
        return {cls} | {sub for direct in cls.__subclasses__() for sub in subclasses(direct)}

    covered = {row.failure for row in TABLE if row.stage is Stage.BEFORE_RESPONSE}
    assert subclasses(h1.UpstreamFailure) - {h1.UpstreamFailure} <= covered


def test_mid_body_the_connection_is_cut_whether_it_broke_or_stalled() -> None:
    for failure in (h1.BodyBrokeOff("upstream connection lost (closed)"), h1.BodyStalled("x")):
        answer = translate(failure, Stage.MID_BODY)
        assert isinstance(answer, UpstreamBrokeOff)
        assert isinstance(answer, ConnectionResetError)  # cut like any connection error
    assert (
        str(translate(h1.BodyBrokeOff("gone"), Stage.MID_BODY)) == "upstream body broke off (gone)"
    )


def test_websocket_failures() -> None:
    refused = aiohttp.WSServerHandshakeError(None, (), status=403)  # type: ignore[arg-type]
    answer = translate(refused, Stage.WEBSOCKET)
    assert isinstance(answer, UpstreamRefused)
    assert answer.status == 403
    assert getattr(translate(TimeoutError(), Stage.WEBSOCKET), "status", None) == 504
    unreachable = translate(aiohttp.ClientOSError(), Stage.WEBSOCKET)
    assert getattr(unreachable, "status", None) == 502
    assert str(unreachable) == "upstream unreachable (ClientOSError)"


def test_the_reason_is_the_failures_own_text() -> None:
    answer = translate(h1.HeadTimeout("upstream did not answer in time"), Stage.BEFORE_RESPONSE)
    assert str(answer) == "upstream did not answer in time"


def test_a_failure_the_table_does_not_name_is_a_bug_not_a_guess() -> None:
    with pytest.raises(TypeError):
        translate(h1.HeadTimeout("x"), Stage.WEBSOCKET)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row.stage.name}-{row.failure.__name__}")
def test_the_kind_label_is_the_one_the_metrics_count(row) -> None:
    metrics = Metrics()
    if row.answer is None:
        assert row.kind == MID_BODY_KIND  # counted by the observation middleware itself
        return
    error = row.answer(403, "x") if row.answer is UpstreamRefused else row.answer("x")  # type: ignore[call-arg]
    metrics.count_upstream_error("public", error)
    text = metrics.render().decode()
    assert _metric(text, "owui_proxy_upstream_errors_total", kind=row.kind, listener="public") == 1
