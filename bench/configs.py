"""Configuration files for the servers the benchmark starts: nginx and Caddy.

Each proxy under test strips every client copy of the identity headers and sets the email
header itself, so all of them do the header work owui-proxy does. Access logs go to a
file for every proxy (a deployment keeps them); the static upstream and the fake
auth service log only what the run counts. The ``auth_request`` / ``forward_auth`` rows
ask the fake auth service on every request, as those modules do (they have no cache), and
take the email from its answer.
"""

from __future__ import annotations

from pathlib import Path

BENCH_EMAIL = "bench@example.edu"
BENCH_NAME = "Bench User"

# Identity headers OpenWebUI is configured with (the defaults of owui-proxy's settings).
IDENTITY_HEADERS = ("X-User-Email", "X-User-Name", "X-User-Groups", "X-User-Role")

# Idle upstream connections each proxy may keep: more than the most client connections
# (256), so no proxy pays for new upstream connections (Caddy's default is 32 per host,
# which alone cuts its throughput at 256 connections by almost 40 %).
POOL = 512

# A small JSON body that echoes the email header the upstream received, so the run can
# check that each proxy really set it (and dropped the client's spoofed value).
STATIC_BODY = '{"ok":true,"user":"$http_x_user_email"}'

# What the stand-in upstreams answer on ``GET /api/config``: owui-proxy reads the OpenWebUI
# release there before it relays anything, and refuses an upstream that names none.
CONFIG_BODY = '{"version":"0.12.4","features":{"enable_signup":true}}'

# What they answer on ``GET /api/v1/auths/``, OpenWebUI's "whose session is this": the
# bench's person, so a request carrying an OpenWebUI token (``bench.stages --request
# browser``) is bound to them as behind OpenWebUI (``proxy/owners.py``).
SESSION_BODY = f'{{"id":"bench","email":"{BENCH_EMAIL}","name":"{BENCH_NAME}","role":"user"}}'


def _nginx_common(workdir: Path, name: str) -> str:
    (workdir / f"{name}-tmp").mkdir(exist_ok=True)  # temp paths of _nginx_http_common
    return f"""
worker_processes 1;
daemon off;
user root;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 8192; }}
"""


def _nginx_http_common(workdir: Path, name: str) -> str:
    tmp = workdir / f"{name}-tmp"
    return f"""
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
"""


def nginx_static(workdir: Path, name: str, port: int) -> Path:
    """Static upstream (``return 200`` small JSON, OpenWebUI's release on ``/api/config``
    and its session owner on ``/api/v1/auths/``) and fake forward-auth service.

    ``/oauth2/auth`` answers 200 with oauth2-proxy's identity headers, like oauth2-proxy
    for a valid session cookie; each call is one line in ``<name>-auth.log``, which is how
    the run counts auth-service calls.
    """
    conf = workdir / f"{name}.conf"
    conf.write_text(
        _nginx_common(workdir, name)
        + f"""
http {{
{_nginx_http_common(workdir, name)}
  access_log off;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /oauth2/auth {{
      access_log {workdir}/{name}-auth.log;
      add_header X-Auth-Request-Email "{BENCH_EMAIL}";
      add_header X-Auth-Request-User "{BENCH_NAME}";
      return 200 "";
    }}
    location = /api/config {{
      default_type application/json;
      return 200 '{CONFIG_BODY}';
    }}
    location = /api/v1/auths/ {{
      default_type application/json;
      return 200 '{SESSION_BODY}';
    }}
    location / {{
      default_type application/json;
      return 200 '{STATIC_BODY}';
    }}
  }}
}}
"""
    )
    return conf


def nginx_proxy(
    workdir: Path, name: str, port: int, upstream_port: int, auth_port: int | None = None
) -> Path:
    """nginx ``proxy_pass`` with a keep-alive upstream pool, setting the identity: a fixed
    email, or with ``auth_port`` nginx ``auth_request``: a subrequest to the auth service
    for every request (over a keep-alive pool), the email taken from its
    ``X-Auth-Request-Email`` answer."""
    email = BENCH_EMAIL if auth_port is None else "$auth_email"
    headers = "\n".join(
        f'      proxy_set_header {h} "{email if h == "X-User-Email" else ""}";'
        for h in IDENTITY_HEADERS
    )
    auth_pool = (
        ""
        if auth_port is None
        else (f"\n  upstream auth {{ server 127.0.0.1:{auth_port}; keepalive {POOL}; }}")
    )
    auth_step = (
        ""
        if auth_port is None
        else """
      auth_request /_auth;
      auth_request_set $auth_email $upstream_http_x_auth_request_email;"""
    )
    auth_location = (
        ""
        if auth_port is None
        else """
    location = /_auth {
      internal;
      proxy_pass http://auth/oauth2/auth;
      proxy_pass_request_body off;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }"""
    )
    conf = workdir / f"{name}.conf"
    conf.write_text(
        _nginx_common(workdir, name)
        + f"""
http {{
{_nginx_http_common(workdir, name)}
  access_log {workdir}/{name}-access.log;
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive {POOL}; }}{auth_pool}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{{auth_step}
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{headers}
    }}{auth_location}
  }}
}}
"""
    )
    return conf


_CADDY_TRANSPORT = f"""transport http {{
        keepalive_idle_conns {POOL}
        keepalive_idle_conns_per_host {POOL}
      }}"""


def _caddy_site(workdir: Path, name: str, port: int, handlers: str) -> Path:
    """A Caddyfile serving ``handlers`` on loopback ``port``, with an access log."""
    conf = workdir / f"{name}.Caddyfile"
    conf.write_text(
        f"""{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  log {{
    output file {workdir}/{name}-access.log
  }}
{handlers}
}}
"""
    )
    return conf


def caddyfile(workdir: Path, name: str, port: int, upstream_port: int) -> Path:
    """Caddy ``reverse_proxy`` deleting the identity headers, then setting the email."""
    removes = "\n".join(f"      header_up -{h}" for h in IDENTITY_HEADERS[1:])
    return _caddy_site(
        workdir,
        name,
        port,
        f"""  reverse_proxy 127.0.0.1:{upstream_port} {{
{removes}
      header_up X-User-Email "{BENCH_EMAIL}"
      {_CADDY_TRANSPORT}
  }}""",
    )


def caddyfile_forward_auth(
    workdir: Path, name: str, port: int, upstream_port: int, auth_port: int
) -> Path:
    """Caddy ``forward_auth`` (a request to the auth service for every request), then
    ``reverse_proxy``; the client's identity headers are deleted first and the email is
    copied from the auth service's answer."""
    removes = "\n".join(f"    request_header -{h}" for h in IDENTITY_HEADERS)
    return _caddy_site(
        workdir,
        name,
        port,
        f"""  route {{
{removes}
    forward_auth 127.0.0.1:{auth_port} {{
      uri /oauth2/auth
      copy_headers X-Auth-Request-Email>X-User-Email
      {_CADDY_TRANSPORT}
    }}
    reverse_proxy 127.0.0.1:{upstream_port} {{
      {_CADDY_TRANSPORT}
    }}
  }}""",
    )
