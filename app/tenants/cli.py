"""``k8si keys create|list|revoke``: manage issued API keys (stored hashed in Valkey)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from ..settings import Settings
from ..valkey import connect
from .keys import KeyStore

__all__ = ["add_key_commands", "run_key_command"]


def add_key_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = commands.add_parser("keys", help="issue, list and revoke API keys (needs VALKEY_URL)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="issue a key for a tenant (shown once)")
    create.add_argument("tenant")
    create.add_argument("--name", default="")
    actions.add_parser("list", help="list issued keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.valkey_url is None:
        print("k8si keys: set VALKEY_URL to the Valkey the service uses")
        return 2
    client = connect(settings.valkey_url)
    store = KeyStore(client)
    try:
        if args.keys_command == "create":
            record, key = await store.create(args.tenant, args.name)
            print(f"id: {record.id}\ntenant: {record.tenant}\nkey: {key}\n"
                  "(the key is shown only now; it is stored hashed)")
        elif args.keys_command == "list":
            for record in await store.list():
                when = datetime.fromtimestamp(record.created_at, UTC).isoformat(timespec="seconds")
                print(f"{record.id}  tenant={record.tenant}  name={record.name!r}  "
                      f"created={when}")
        elif not await store.revoke(args.key_id):
            print(f"no key with id {args.key_id}")
            return 1
        else:
            print(f"revoked {args.key_id}")
        return 0
    finally:
        await client.aclose()


def run_key_command(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))
