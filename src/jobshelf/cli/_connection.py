"""Connection options shared by every subcommand, and the store they open."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import click
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .._core.formats import UNTAGGED_FORMAT
from .._core.rows import MalformedTag
from .._exceptions import JobshelfError
from .._resolve import available_serializers, resolve_serializer
from .._serializer import Serializer
from ..mongodb import MongoDBJobStore
from ..serializers.signed import SignedSerializer
from ._text import printable

__all__ = [
    "KEYS_ENV",
    "SIGNED_PREFIX",
    "URI_ENV",
    "CliError",
    "Connection",
    "NotFound",
    "connection_options",
    "open_store",
    "serializer_for",
    "tag_label",
]

URI_ENV = "JOBSHELF_MONGODB_URI"
#: Signing keys for ``signed+...`` formats: comma-separated, newest last. Never a flag: flags
#: end up in shell history and process listings.
KEYS_ENV = "JOBSHELF_SIGNING_KEYS"
SIGNED_PREFIX = "signed+"


class CliError(click.ClickException):
    """One clear line on stderr and exit status 2 (usage, connection, configuration); no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"jobshelf: {printable(self.format_message())}", err=True)


class NotFound(CliError):
    """The job (or quarantined job) named does not exist, or cannot be decoded: exit status 1."""

    exit_code = 1


class KeysProblem(CliError):
    """A ``signed+`` format cannot be used with the keys in the environment (missing, too short)."""

    def __init__(self, spec: str, why: str) -> None:
        super().__init__(f"format {spec!r} {why}")
        self.why = why


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--uri``, ``--database``, ``--collection``, ``--serializer``, ``--accept``, ``--timeout``,
    ``--allow``, ``--unsafe-run-code``."""
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
            help="the store's serializer spec, as serializer= takes it (default: the store's default)",
        ),
        click.option(
            "--accept",
            multiple=True,
            help="a format to read (repeatable; default: every registered format found in the collection)",
        ),
        click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for the server"),
        click.option(
            "--allow",
            multiple=True,
            metavar="PATTERN",
            help="allowed_callables, as your application sets it (repeatable): the modules (or "
            "module:name patterns) jobs may call and whose classes stored pickles may use",
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


def _signing_keys(spec: str) -> list[str]:
    keys = [key for key in os.environ.get(KEYS_ENV, "").split(",") if key]
    if not keys:
        raise KeysProblem(spec, f"needs the signing keys: set {KEYS_ENV}=key1,key2 (newest last)")
    return keys


def serializer_for(spec: str) -> Serializer:
    """A serializer from an operator's spec (``--to``, ``--serializer``, ``--accept``) or a stored
    format tag already checked by :func:`registered`; ``signed+X`` takes its keys from the env.

    :raises CliError: the keys are missing or too short, or the spec names no serializer
    """
    try:
        if not spec.startswith(SIGNED_PREFIX):
            return resolve_serializer(spec)
        keys = _signing_keys(spec)
        inner = serializer_for(spec.removeprefix(SIGNED_PREFIX))
        try:
            return SignedSerializer(inner, keys=keys)
        except JobshelfError as exc:  # the inner serializer is built: what fails is the keys
            raise KeysProblem(
                spec,
                f"cannot use {KEYS_ENV}: a key in it is too short ({exc}); set it to the keys "
                "your application signs with (comma-separated, newest last)",
            ) from None
    except JobshelfError as exc:
        raise CliError(str(exc)) from None


def registered(tag: Any) -> bool:
    """True when a stored format tag names a registered serializer (``signed+`` one at most).

    Only these are ever resolved: any other tag (``"os:system"``, ``"signed+this:x"``, a number)
    is data and stays unread.
    """
    if tag is None:
        return True
    if type(tag) is not str:
        return False
    known = available_serializers()
    return tag in known or (tag.startswith(SIGNED_PREFIX) and tag.removeprefix(SIGNED_PREFIX) in known)


def tag_label(tag: Any) -> str:
    """How a stored format tag is shown: untagged as the stock format, a non-string by its type."""
    if tag is None:
        return UNTAGGED_FORMAT
    if type(tag) is str:
        return tag
    if isinstance(tag, MalformedTag):  # counted by the store under the repr of what is stored
        return f"<malformed {tag}>"
    return f"<malformed {type(tag).__name__} {tag!r}>"


class Connection:
    """What the connection options say, and the store they open (nothing is written on opening).

    The store reads with ``allowed_callables`` set to ``--allow`` (none when it is not given):
    pickles go through the store's restricted unpickler, the one its applications use, and a job
    is re-encoded or restored only if its callable is allowed. ``--unsafe-run-code`` lifts both.
    """

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
        self.allowed: list[str] | None = None if unsafe_run_code else list(allow)
        #: every stored format tag, quarantined jobs included, with its number of jobs
        self.formats: Mapping[Any, int] = {}
        #: format label -> why this command cannot decode it
        self.unreadable: dict[str, str] = {}

    @property
    def where(self) -> str:
        parts = urlsplit(self.uri)
        host = parts.hostname or self.uri
        port = f":{parts.port}" if parts.port else ""
        return f"{self.database}.{self.collection} on {host}{port}"

    def open(self, *, must_exist: bool = True) -> MongoDBJobStore:
        """The store, reading every format found (or ``--accept``); its client is closed on error.

        :raises CliError: no server, no collection, or options that do not make a store
        """
        try:
            client: MongoClient[Any] = MongoClient(
                self.uri, serverSelectionTimeoutMS=int(self.timeout * 1000)
            )
        except PyMongoError as exc:
            raise self._unreachable(exc) from None
        try:
            return self._open(client, must_exist)
        except BaseException:
            client.close()
            raise

    def _open(self, client: MongoClient[Any], must_exist: bool) -> MongoDBJobStore:
        try:
            client.admin.command("ping")
            exists = self.collection in client[self.database].list_collection_names()
            if must_exist and not exists:
                raise CliError(
                    f"there is no collection {self.where}; check --database and --collection "
                    "(nothing was written)"
                )
            probe = MongoDBJobStore(self.database, self.collection, client=client)
            self.formats = probe.stored_format_counts()
        except PyMongoError as exc:
            raise self._unreachable(exc) from None
        serializer = serializer_for(self.serializer) if self.serializer else None
        accepted = [serializer_for(spec) for spec in self.accept] if self.accept else self._found()
        try:
            store = MongoDBJobStore(
                self.database, self.collection, client=client, serializer=serializer, accept=accepted,
                allowed_callables=self.allowed,
            )  # fmt: skip
        except (JobshelfError, TypeError, ValueError) as exc:
            raise CliError(str(exc)) from None
        for tag in self.formats:
            label = tag_label(tag)
            if not store.accepts(tag) and label not in self.unreadable:
                self.unreadable[label] = "not among the --accept formats"
        return store

    def _unreachable(self, exc: PyMongoError) -> CliError:
        first_line = str(exc).split(" (configured")[0].split(", Timeout")[0]
        return CliError(
            f"cannot connect to {self.where}: {first_line}. Check --uri (or {URI_ENV}) and that "
            "the server is running"
        )

    def _found(self) -> list[Any]:
        """A serializer for every registered format tag in the collection; why not, for the others."""
        accepted: list[Any] = []
        for tag in self.formats:
            label = tag_label(tag)
            if not registered(tag):
                self.unreadable[label] = _unregistered(tag)
                continue
            try:
                accepted.append(serializer_for(label))
            except KeysProblem as exc:
                self.unreadable[label] = exc.why
            except CliError as exc:
                self.unreadable[label] = exc.message
        return accepted


def _unregistered(tag: Any) -> str:
    if type(tag) is not str:
        return "a malformed format tag (not a string): never read"
    names = ", ".join(sorted(available_serializers()))
    return (
        f"no serializer is registered as {tag!r} here (registered: {names}; signed+ any of them): "
        "install the package that provides it; it is never looked up as a module"
    )


def open_store(ctx: click.Context, **options: Any) -> tuple[Connection, MongoDBJobStore]:
    """The connection the options describe and its store, whose client closes with the command."""
    connection = Connection(**options)
    store = connection.open()
    ctx.call_on_close(store.client.close)
    return connection, store
