"""Connection options shared by every subcommand, and the store they open."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .._exceptions import JobshelfError
from .._policy import CallablePolicy
from .._resolve import available_serializers, resolve_serializer
from .._serializer import Serializer, format_name, is_pickle_family
from ..mongodb import FORMAT_FIELD, MongoDBJobStore
from ..serializers.signed import SignedSerializer

__all__ = [
    "KEYS_ENV",
    "URI_ENV",
    "CliError",
    "Connection",
    "NotFound",
    "connection_options",
    "serializer_for",
]

URI_ENV = "JOBSHELF_MONGODB_URI"
#: Signing keys for ``signed+...`` formats: comma-separated, newest last. Never a flag: flags
#: end up in shell history and process listings.
KEYS_ENV = "JOBSHELF_SIGNING_KEYS"


class CliError(click.ClickException):
    """One clear line on stderr and exit status 2 (usage, connection, configuration); no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"jobshelf: {self.format_message()}", err=True)


class NotFound(CliError):
    """The job (or quarantined job) named does not exist, or cannot be decoded: exit status 1."""

    exit_code = 1


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--uri``, ``--database``, ``--collection``, ``--serializer``, ``--accept``, ``--timeout``."""
    options = [
        click.option(
            "--uri",
            envvar=URI_ENV,
            default="mongodb://localhost",
            show_default=True,
            help=f"MongoDB connection string (default: ${URI_ENV}, else localhost)",
        ),
        click.option("--database", default="apscheduler", show_default=True),
        click.option("--collection", default="jobs", show_default=True),
        click.option(
            "--serializer",
            default=None,
            help="the store's serializer spec, as serializer= takes it (default: pickle)",
        ),
        click.option(
            "--accept",
            multiple=True,
            help="a format to read (repeatable; default: every format found in the collection)",
        ),
        click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for the server"),
        click.option(
            "--allow",
            multiple=True,
            metavar="MODULE",
            help="a module whose classes stored pickles may use (repeatable); others are not imported",
        ),
        click.option(
            "--unsafe-run-code",
            is_flag=True,
            help="unpickle without restriction: RUNS WHATEVER CODE THE STORED BYTES NAME",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _signing_keys() -> list[str]:
    return [key for key in os.environ.get(KEYS_ENV, "").split(",") if key]


class RestrictedPickleReader:
    """Reads a pickle-family format through the restricted unpickler: job-state classes and the
    ``--allow``-ed modules only, so reading a stored job runs none of the code it names. Writes as
    the wrapped serializer does."""

    def __init__(self, inner: Any, allowed: tuple[str, ...]) -> None:
        self.inner = inner
        self.format_name = format_name(inner)
        self.pickle_family = is_pickle_family(inner)
        self.stores_callables_by_value = False
        self._policy = CallablePolicy(allowed)

    def dumps(self, state: dict[str, Any], /) -> bytes:
        return self.inner.dumps(state)  # type: ignore[no-any-return]

    def loads(self, data: bytes, /) -> dict[str, Any]:
        return self.inner.loads_restricted(data, self._policy.allows_global)  # type: ignore[no-any-return]


def serializer_for(spec: str, *, allowed: tuple[str, ...] | None = None) -> Serializer:
    """A serializer from a spec or a stored format name; ``signed+X`` takes its keys from the env.

    With ``allowed`` (a tuple, possibly empty), pickle-family formats are read restricted.
    """
    if spec.startswith("signed+"):
        keys = _signing_keys()
        if not keys:
            raise CliError(f"format {spec!r} needs the signing keys: set {KEYS_ENV}=key1,key2 (newest last)")
        return SignedSerializer(serializer_for(spec.removeprefix("signed+"), allowed=allowed), keys=keys)
    serializer = resolve_serializer(spec)
    if allowed is not None and callable(getattr(serializer, "loads_restricted", None)):
        return RestrictedPickleReader(serializer, allowed)
    return serializer


class Connection:
    """What the connection options say, and the store they open (nothing is written on opening)."""

    def __init__(
        self,
        *,
        uri: str,
        database: str,
        collection: str,
        serializer: str | None,
        accept: tuple[str, ...],
        timeout: float,
        allow: tuple[str, ...],
        unsafe_run_code: bool,
    ) -> None:
        self.uri, self.database, self.collection = uri, database, collection
        self.serializer, self.accept, self.timeout = serializer, accept, timeout
        #: how pickle is read: restricted to these modules, or (None) unrestricted
        self.allowed: tuple[str, ...] | None = None if unsafe_run_code else allow
        self.unreadable: dict[str, str] = {}  # format -> why this command cannot decode it

    @property
    def where(self) -> str:
        parts = urlsplit(self.uri)
        host = parts.hostname or self.uri
        port = f":{parts.port}" if parts.port else ""
        return f"{self.database}.{self.collection} on {host}{port}"

    def open(self, *, must_exist: bool = True) -> MongoDBJobStore:
        try:
            client: MongoClient[Any] = MongoClient(
                self.uri, serverSelectionTimeoutMS=int(self.timeout * 1000)
            )
            client.admin.command("ping")
            exists = self.collection in client[self.database].list_collection_names()
        except PyMongoError as exc:
            first_line = str(exc).split(" (configured")[0].split(", Timeout")[0]
            raise CliError(
                f"cannot connect to {self.where}: {first_line}. Check --uri (or {URI_ENV}) and that "
                "the server is running"
            ) from None
        if must_exist and not exists:
            client.close()
            raise CliError(
                f"there is no collection {self.where}; check --database and --collection "
                "(nothing was written)"
            )
        try:
            accepted = self._accepted(client[self.database][self.collection])
            return MongoDBJobStore(
                self.database, self.collection, client=client, serializer=self._serializer(), accept=accepted
            )
        except JobshelfError as exc:
            raise CliError(str(exc)) from None

    def _serializer(self) -> Serializer:
        # the store's own format is read with it too: restricted like every accepted one
        return serializer_for(self.serializer or "pickle", allowed=self.allowed)

    def _accepted(self, collection: Any) -> list[Any]:
        if self.accept:
            return [serializer_for(spec, allowed=self.allowed) for spec in self.accept]
        # every format tag in the collection, quarantined jobs included (one aggregation, no states)
        tags = collection.aggregate([{"$group": {"_id": f"${FORMAT_FIELD}"}}])
        found = {"pickle" if row["_id"] is None else row["_id"] for row in tags
                 if row["_id"] is None or isinstance(row["_id"], str)}  # fmt: skip
        accepted: list[Any] = []
        known = available_serializers()
        for name in sorted(found):
            if name in known or name.startswith("signed+"):
                try:
                    accepted.append(serializer_for(name, allowed=self.allowed))
                except (CliError, JobshelfError) as exc:
                    self.unreadable[name] = exc.message if isinstance(exc, CliError) else str(exc)
            else:
                self.unreadable[name] = (
                    f"no serializer named {name!r} is installed here (pip install its package)"
                )
        return accepted
