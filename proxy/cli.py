"""``owui-proxy``: load the settings (every problem reported, exit 2), then serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy import logs, server, version
from proxy.settings import ENV_PREFIX, Settings, SettingsError, load_settings


def config_reference() -> str:
    """Markdown table of every setting, generated from the settings model's descriptions."""
    lines = [
        "| Environment variable | TOML key | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        if info.is_required():
            default = "*required*"
        else:
            value = info.get_default(call_default_factory=True)
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            default = "*unset*" if value is None or value == "" else f"`{value}`"
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{name}` | {default} | {description} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="owui-proxy",
        description="Identity-aware reverse proxy in front of OpenWebUI (trusted-header mode). "
        f"Configured by {ENV_PREFIX}* environment variables and/or a TOML file; "
        "the environment wins. See docs/config.md.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="TOML file with the same keys as the environment, lower case, without prefix",
    )
    parser.add_argument(
        "--print-config-reference",
        action="store_true",
        help="print every setting as a Markdown table and exit",
    )
    parser.add_argument("--version", action="version", version=f"owui-proxy {version()}")
    args = parser.parse_args(argv)
    if args.print_config_reference:
        print(config_reference())
        return 0
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        server.report_problems(exc.problems)
        return 2
    logs.configure(settings.log_level)
    return server.run(settings)
