"""Start Flower, refusing to expose it without a login: `python -m scripts.flower`.

FLOWER_ADDRESS (default 127.0.0.1) and FLOWER_PORT (default 5555) say where it listens.
Off loopback, FLOWER_BASIC_AUTH (`user:password`) is required; Flower reads that variable
itself, so the password never appears on a command line (`ps` shows those to every user).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping


class FlowerConfigError(Exception):
    pass


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_command(env: Mapping[str, str]) -> list[str]:
    """The command that runs Flower as `env` asks, or FlowerConfigError when it would be open."""
    address = env.get("FLOWER_ADDRESS", "127.0.0.1")
    port = env.get("FLOWER_PORT", "5555")
    user, _, password = env.get("FLOWER_BASIC_AUTH", "").partition(":")
    if not is_loopback(address) and not (user and password):
        raise FlowerConfigError(
            f"Flower would listen on {address} without a login: set FLOWER_BASIC_AUTH=user:password"
            " (or FLOWER_ADDRESS=127.0.0.1)."
        )
    return ["celery", "-A", "tasks", "flower", f"--address={address}", f"--port={port}"]


def main() -> None:
    try:
        command = flower_command(os.environ)
    except FlowerConfigError as error:
        sys.exit(f"flower: {error}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
