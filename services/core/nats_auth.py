"""NATS identities: one user per role, each allowed only the subjects that role uses.

Pure functions: :func:`role_permissions` says what a role may publish and subscribe for a subject prefix,
:func:`render_authorization` writes that as nats-server configuration. The embedded server is configured
from them (services/core/embedded.py) and so is the compose stack's committed config (ops/nats/...).

Roles:

- ``admin``: creates and updates the JetStream streams (and may do anything: the demo resets its streams);
  never used by a service.
- ``clock``: alone publishes ticks (``<prefix>.tick.>``). ``openbell tick`` (a manual tick) uses it too. It
  reads the job feed (``<prefix>.feed.job.*``): the virtual clock moves on when the runs of a tick ended.
- ``relay``: alone publishes the event log (``<prefix>.event.>``); it also turns stored events into feeds
  (halts, order lifecycle, risk refusals, discrepancies) through durable consumers on the events stream.
- ``services``: strategy, orders, positions, alerts, projections: consume their durable consumers, publish
  feeds, dead letters, work items and replies to the commands they serve.
- ``operator``: the CLI: sends commands (``<prefix>.cmd.>``) and reads.
- ``web``: the HTTP dashboard: reads the feeds stream through ordered consumers of its own (its operator
  actions append to the event store, like the CLI's).
- ``feed``: read-only, for browsers: subscribes ``<prefix>.feed.>`` only, over the websocket only.

No role but ``admin`` may create, update, delete or purge a stream.

The test suite shares one server between many prefixes: it is configured with the prefix ``*`` (any first
token), so the same rules hold for every test's prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ROLES: tuple[str, ...] = ("admin", "clock", "relay", "services", "operator", "web", "feed")
ANY_PREFIX = "*"
STREAM_KINDS = ("TICKS", "EVENTS", "WORK", "DLQ", "FEEDS")
# Commands the web dashboard may send (halt/resume a portfolio, enable/disable a job).
WEB_COMMANDS = ("cmd.portfolio.halt", "cmd.portfolio.resume", "cmd.job.>")

# Stream administration: only the admin role.
STREAM_ADMIN_DENY = (
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.CONSUMER.DELETE.>",
)


@dataclass(frozen=True)
class Permissions:
    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    # May answer a request it received (the reply subject of that one message), nothing more.
    allow_responses: bool = False
    connection_types: tuple[str, ...] = ("STANDARD",)


def stream_token(prefix: str, kind: str) -> str:
    """The stream name of ``kind`` for ``prefix`` as a subject token (``*`` when any prefix is allowed)."""
    if prefix == ANY_PREFIX:
        return ANY_PREFIX
    return f"{prefix.upper().replace('-', '_')}_{kind}"


def _reading(prefix: str) -> tuple[str, ...]:
    """JetStream read-only API on the prefix's streams: account and stream info, get a message."""
    subjects = ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
    for kind in STREAM_KINDS:
        stream = stream_token(prefix, kind)
        subjects += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.NAMES.{stream}",
            f"$JS.API.CONSUMER.LIST.{stream}",
        ]
    return tuple(subjects)


def _consuming(prefix: str, kinds: Sequence[str]) -> tuple[str, ...]:
    """Create/bind durable pull consumers on these streams, fetch from them and acknowledge."""
    subjects: list[str] = []
    for kind in kinds:
        stream = stream_token(prefix, kind)
        subjects += [
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.ACK.{stream}.>",
        ]
    return tuple(subjects)


def role_permissions(role: str, prefix: str) -> Permissions:
    p = prefix
    inbox = ("_INBOX.>",)
    notice = f"{p}.store.appended"  # "an append happened": wakes relays in other processes
    if role == "admin":
        return Permissions(publish_allow=(">",), subscribe_allow=(">",))
    if role == "clock":
        return Permissions(
            publish_allow=(f"{p}.tick.>", notice, f"{p}.feed.>", *_reading(p)),
            publish_deny=STREAM_ADMIN_DENY,
            # The job feed wakes the virtual clock as soon as a tick's run has ended.
            subscribe_allow=(f"{p}.feed.job.*", *inbox),
        )
    if role == "relay":
        return Permissions(
            publish_allow=(
                f"{p}.event.>", f"{p}.feed.>", f"{p}.dlq.>", notice, *_reading(p), *_consuming(p, ("EVENTS",)),
            ),
            publish_deny=STREAM_ADMIN_DENY,
            subscribe_allow=(notice, *inbox),
        )
    if role == "services":
        return Permissions(
            publish_allow=(
                f"{p}.feed.>", f"{p}.dlq.>", f"{p}.work.>", notice,
                *_reading(p), *_consuming(p, STREAM_KINDS),
            ),
            publish_deny=(f"{p}.tick.>", f"{p}.event.>", f"{p}.cmd.>", *STREAM_ADMIN_DENY),
            subscribe_allow=(f"{p}.cmd.>", f"{p}.feed.>", notice, *inbox),
            allow_responses=True,
        )
    if role == "operator":
        return Permissions(
            publish_allow=(f"{p}.cmd.>", notice, *_reading(p)),
            publish_deny=(f"{p}.tick.>", f"{p}.event.>", *STREAM_ADMIN_DENY),
            subscribe_allow=(f"{p}.feed.>", notice, *inbox),
        )
    if role == "web":
        feeds = stream_token(p, "FEEDS")
        return Permissions(
            publish_allow=(
                *(f"{p}.{command}" for command in WEB_COMMANDS), *_reading(p),
                # Ordered (ephemeral) consumers of the feeds stream, and their flow-control answers.
                f"$JS.API.CONSUMER.CREATE.{feeds}", f"$JS.API.CONSUMER.CREATE.{feeds}.>", f"$JS.FC.{feeds}.>",
            ),
            publish_deny=(f"{p}.tick.>", f"{p}.event.>", *STREAM_ADMIN_DENY),
            subscribe_allow=(f"{p}.feed.>", *inbox),
        )
    if role == "feed":
        return Permissions(
            publish_deny=(">",),
            subscribe_allow=(f"{p}.feed.>",),
            connection_types=("WEBSOCKET",),
        )
    raise ValueError(f"unknown NATS role {role!r} (known: {', '.join(ROLES)})")


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def _render_permissions(permissions: Permissions) -> str:
    parts = []
    for direction, allow, deny in (
        ("publish", permissions.publish_allow, permissions.publish_deny),
        ("subscribe", permissions.subscribe_allow, permissions.subscribe_deny),
    ):
        rules = []
        if allow:
            rules.append(f"allow: {_list(allow)}")
        if deny:
            rules.append(f"deny: {_list(deny)}")
        if rules:
            parts.append(f"{direction}: {{ {', '.join(rules)} }}")
    if permissions.allow_responses:
        parts.append("allow_responses: true")
    return "{ " + ", ".join(parts) + " }"


def compose_password_variable(role: str) -> str:
    """The environment variable that holds ``role``'s password in the compose stack."""
    return f"OPENBELL_NATS_{role.upper()}_PASSWORD"


def render_authorization(prefix: str, passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block: one user per role, a password each."""
    lines = ["authorization {", "  users: ["]
    for role in ROLES:
        permissions = role_permissions(role, prefix)
        lines.append(
            f"    {{ user: {json.dumps(role)}, password: {json.dumps(passwords[role])},"
            f" allowed_connection_types: {_list(permissions.connection_types)},"
            f" permissions: {_render_permissions(permissions)} }}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def render_websocket(listen: str, allowed_origins: Sequence[str], *, no_tls: bool = True) -> str:
    """The websocket listener browsers use (as the ``feed`` user); only pages from ``allowed_origins``
    may connect (nats-server checks the Origin header)."""
    return (
        "websocket {\n"
        f"  listen: {json.dumps(listen)}\n"
        f"  no_tls: {'true' if no_tls else 'false'}\n"
        f"  allowed_origins: {_list(allowed_origins)}\n"
        "}\n"
    )
