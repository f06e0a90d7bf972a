"""A real OpenWebUI for cases 2 and 6, pinned like every other server in the run.

The install and the offline, trusted-header environment are the demo's
(``demo.openwebui``); only the launch is ours, so that it runs under ``taskset``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.procs import Proc, Procs, free_port, wait_http
from demo import openwebui


@dataclass
class WebUI:
    proc: Proc
    url: str


def start(procs: Procs, work: Path, cpus: str | None) -> WebUI:
    command = openwebui.ensure_installed()
    port = free_port()
    data = work / "openwebui-data"
    data.mkdir()
    env = openwebui.offline_environment(
        data_dir=data, port=port, openai_base_url=None, secret_key=secrets.token_urlsafe(32)
    )
    argv = [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = procs.start("openwebui", argv, cpus=cpus, env=env, cwd=data)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, timeout=240)
    return WebUI(proc, url)


def admin_token(url: str, email: str) -> str:
    """The first account (admin) through the trusted header; its token for case 2."""
    user = openwebui.create_operator_admin(url, email, "Bench User")
    return str(user["token"])


def make_chats(url: str, token: str, email: str, count: int) -> None:
    """Give the bench user some chats, so the list endpoint returns a realistic page."""
    headers = {"Authorization": f"Bearer {token}", openwebui.EMAIL_HEADER: email}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(count):
            ts = int(time.time())
            msg_id = f"m{i}"
            message = {
                "id": msg_id,
                "parentId": None,
                "childrenIds": [],
                "role": "assistant",
                "content": f"Hello, this is chat {i}.",
                "done": True,
                "timestamp": ts,
            }
            chat = {
                "title": f"Bench chat {i}",
                "models": [],
                "history": {"currentId": msg_id, "messages": {msg_id: message}},
                "messages": [message],
                "timestamp": ts * 1000,
            }
            client.post("/api/v1/chats/new", json={"chat": chat}).raise_for_status()
