"""Commands: keys for operators (`create-key`, `revoke-key`), and the client commands."""

from __future__ import annotations

import click
from flask import Flask

from api.client_cli import register_client_cli
from api.db import sessions
from services.apikeys import create_key, revoke_key


def register_cli(app: Flask) -> None:
    register_client_cli(app)

    @app.cli.command("create-key")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="The key sees and manages every job.")
    def create_key_command(name: str, admin: bool) -> None:
        """Create an API key and print it once (only its digest is stored)."""
        with sessions().begin() as session:
            _, key = create_key(session, name, admin=admin)
        click.echo(key)

    @app.cli.command("revoke-key")
    @click.argument("prefix")
    def revoke_key_command(prefix: str) -> None:
        """Revoke the key whose first 12 characters are PREFIX."""
        with sessions().begin() as session:
            count = revoke_key(session, prefix)
        if not count:
            raise click.ClickException(f"No active key starts with {prefix!r}.")
        click.echo(f"revoked {count} key(s)")
