"""Commands: keys and their entitlements for operators (`create-key`, `set-entitlements`,
`revoke-key`), the delivery bucket's set-up (`setup-bucket`), and the client commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click
from flask import Flask, current_app

from api.client_cli import register_client_cli
from api.db import sessions
from services.apikeys import create_key, default_entitlements, entitlements_of, revoke_key, set_entitlements
from services.config import Settings
from services.entitlements import ANALYSIS_BACKENDS, PRIORITIES, Entitlements
from services.storage import configure_delivery_bucket, make_s3_client

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
UNLIMITED = ("none", "unlimited")


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise click.BadParameter(f"unknown {unknown}; choose from {list(allowed)}")
        return names

    return parse


def _buckets(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _count(text: str) -> int | None:
    if text.strip().lower() in UNLIMITED:
        return None
    if not text.strip().isdigit():
        raise click.BadParameter(f"{text!r} is not a whole number or 'unlimited'")
    return int(text)


def _size(text: str) -> int | None:
    if text.strip().lower() in UNLIMITED:
        return None
    match = _SIZE.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a size like 500M, 20G or 'unlimited'")
    return int(match[1]) * _UNITS[match[2].upper()]


# Entitlements field -> (option, parser, help)
ENTITLEMENT_OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "priorities": ("--priorities", _names(PRIORITIES), "Comma-separated priorities the key may ask for."),
    "source_buckets": (
        "--source-buckets",
        _buckets,
        "Comma-separated S3 source buckets (or bucket/prefix) the key may read; '' for none.",
    ),
    "analysis_backends": (
        "--analysis-backends",
        _names(ANALYSIS_BACKENDS),
        "Comma-separated analysis backends; gemini sends the key's videos to Google.",
    ),
    "max_active_jobs": ("--max-active-jobs", _count, "Jobs queued or running at once, or 'unlimited'."),
    "max_source_bytes_per_day": (
        "--max-source-bytes-per-day",
        _size,
        "Source bytes per 24 h (e.g. 20G), or 'unlimited'.",
    ),
}


def entitlement_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name, (flag, _, text) in reversed(ENTITLEMENT_OPTIONS.items()):
        command = click.option(flag, name, default=None, help=text)(command)
    return command


def parsed_changes(given: dict[str, str | None]) -> dict[str, Any]:
    return {name: ENTITLEMENT_OPTIONS[name][1](value) for name, value in given.items() if value is not None}


def describe(entitlements: Entitlements) -> str:
    def shown(value: Any) -> str:
        if value is None:
            return "unlimited"
        return ",".join(value) or "none" if isinstance(value, tuple) else str(value)

    return " ".join(f"{item.name}={shown(getattr(entitlements, item.name))}" for item in fields(entitlements))


def register_cli(app: Flask) -> None:
    register_client_cli(app)

    @app.cli.command("create-key")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="The key sees and manages every job.")
    @entitlement_options
    def create_key_command(name: str, admin: bool, **given: str | None) -> None:
        """Create an API key and print it once (only its digest is stored), as the last word."""
        defaults = default_entitlements(admin=admin)
        granted = Entitlements(
            **({item.name: getattr(defaults, item.name) for item in fields(defaults)} | parsed_changes(given))
        )
        with sessions().begin() as session:
            _, key = create_key(session, name, admin=admin, entitlements=granted)
        click.echo(f"entitlements: {describe(granted)}")
        click.echo(key)

    @app.cli.command("set-entitlements")
    @click.argument("prefix")
    @entitlement_options
    def set_entitlements_command(prefix: str, **given: str | None) -> None:
        """Change what the key whose first 12 characters are PREFIX may do; options not given stay."""
        change = parsed_changes(given)
        if not change:
            raise click.UsageError("Give at least one entitlement to change (see --help).")
        with sessions().begin() as session:
            rows = set_entitlements(session, prefix, change)
            if not rows:
                raise click.ClickException(f"No active key starts with {prefix!r}.")
            for row in rows:
                click.echo(f"{row.prefix} {row.name}: {describe(entitlements_of(row))}")

    @app.cli.command("revoke-key")
    @click.argument("prefix")
    def revoke_key_command(prefix: str) -> None:
        """Revoke the key whose first 12 characters are PREFIX."""
        with sessions().begin() as session:
            count = revoke_key(session, prefix)
        if not count:
            raise click.ClickException(f"No active key starts with {prefix!r}.")
        click.echo(f"revoked {count} key(s)")

    @app.cli.command("setup-bucket")
    def setup_bucket_command() -> None:
        """Create the delivery bucket if missing and set its CORS from S3_CORS_ORIGINS (once, at
        set-up: workers never touch it, so what an operator set stays)."""
        settings: Settings = current_app.extensions["conveyor.settings"]
        cors = configure_delivery_bucket(
            make_s3_client(settings), settings.s3_bucket, settings.s3_cors_origins
        )
        click.echo(f"bucket {settings.s3_bucket}: ready; CORS {'set' if cors else 'left as it is'}")
