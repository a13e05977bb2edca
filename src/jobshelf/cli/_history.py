"""``jobshelf history``: what ran, when, where, for how long, and how it ended; and the last hour
of it in ``jobshelf status``.

Records are read through the store's public API (:meth:`get_job_history`,
:meth:`get_history_summary`), which checks every field; what they hold is printed through the
escaping console (a job id or error message written by anyone reaches no terminal as a control
sequence), and ``--json`` escapes every control and non-ASCII character.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import click
from pymongo.errors import PyMongoError
from rich.table import Table

from .._core.history import RunRecord
from .._exceptions import JobshelfError
from ..mongodb import MongoDBJobStore
from ._connection import CliError, connection_options, open_store
from ._text import OUT

__all__ = ["history", "history_rows", "parse_since", "record_json"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
#: ``--failed``: every outcome but a successful run.
FAILED = ("error", "missed", "skipped")


def parse_since(text: str) -> dt.datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` (that long ago) or an ISO 8601 date-time (UTC unless it
    names an offset), as an aware datetime.

    :raises CliError: naming what it takes
    """
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        try:
            return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
        except OverflowError:
            raise CliError(f"--since {text!r} reaches back before year 1") from None
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--since takes a duration (30m, 1h, 2d, 1w) or an ISO date-time such as "
            f"2030-01-01T03:00 (UTC unless it names an offset), got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def record_json(record: RunRecord) -> dict[str, Any]:
    """One record as ``--json`` prints it (keys documented in the README, times ISO 8601 in UTC)."""
    return {
        "job_id": record.job_id,
        "scheduled_run_time": _iso(record.scheduled_run_time),
        "submitted_at": _iso(record.submitted_at),
        "finished_at": _iso(record.finished_at),
        "duration": record.duration,
        "outcome": record.outcome,
        "error": record.error._asdict() if record.error is not None else None,
        "holder": record.holder._asdict() if record.holder is not None else None,
        "duplicate": record.duplicate,
    }


def _reader(store: MongoDBJobStore, name: str | None) -> MongoDBJobStore:
    """A store that only reads the history next to ``store``'s collection (nothing is started)."""
    collection = store.collection
    return MongoDBJobStore(collection.database.name, collection.name, client=store.client,
                           history=name or True)  # fmt: skip


def _exists(reader: MongoDBJobStore) -> bool:
    return reader.history in reader.collection.database.list_collection_names()


@click.command()
@connection_options
@click.argument("job_id", required=False)
@click.option("--failed", is_flag=True, help="only runs that did not succeed: error, missed, skipped")
@click.option(
    "--since",
    "since_text",
    default=None,
    metavar="WHEN",
    help="only fire times since WHEN: 30m, 1h, 2d, 1w, or an ISO date-time (UTC unless it says)",
)
@click.option(
    "--duplicates", is_flag=True, help="only fire times that ran more than once (every record of each)"
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="at most this many")
@click.option(
    "--history",
    "history_name",
    default=None,
    metavar="COLLECTION",
    help="the history collection, as history= names it (default: <collection>_runs)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON array of objects (stable keys, ASCII)")
@click.option("--tz", "tz_name", default="UTC", show_default=True, help="zone to show fire times in")
@click.pass_context  # fmt: skip
def history(
    ctx: click.Context,
    /,
    *,
    job_id: str | None,
    failed: bool,
    since_text: str | None,
    duplicates: bool,
    limit: int,
    history_name: str | None,
    as_json: bool,
    tz_name: str,
    **options: Any,
) -> None:
    """Execution records, newest fire time first: one row per fire time a scheduler ran (a store
    created with history=True records them)."""
    from ._commands import _zone  # the one zone parser (that module imports this one)

    zone = _zone(tz_name)
    since = parse_since(since_text) if since_text is not None else None
    _, store = open_store(ctx, **options)
    try:
        reader = _reader(store, history_name)
    except (JobshelfError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if not _exists(reader):
        raise CliError(
            f"there is no history collection {reader.collection.database.name}.{reader.history}: create "
            "the store with history=True (or pass --history with the name it was given)"
        )
    records = reader.get_job_history(
        job_id, since=since, outcome=FAILED if failed else None, limit=limit, duplicates=duplicates
    )
    if as_json:  # json.dumps escapes every control and non-ASCII character
        click.echo(json.dumps([record_json(record) for record in records], indent=2))
        return
    table = Table(f"fire time ({tz_name})", "job", "outcome", "duration", "holder", "error")
    for record in records:
        when = record.scheduled_run_time
        error = record.error
        table.add_row(
            when.astimezone(zone).isoformat(sep=" ") if when is not None else "-",
            record.job_id,
            record.outcome + (" (duplicate)" if record.duplicate else ""),
            f"{record.duration:.3f} s" if record.duration is not None else "-",
            record.holder.instance if record.holder is not None else "-",
            f"{error.type}: {error.message.splitlines()[0] if error.message else ''}"[:200] if error else "",
        )
    OUT.print(table)
    more = f" (the newest {limit}: --limit shows more)" if len(records) == limit else ""
    OUT.print(f"{len(records)} run{'s' if len(records) != 1 else ''}{more}")


def history_rows(table: Table, store: MongoDBJobStore) -> None:
    """``jobshelf status``'s rows for the last hour of the default history collection: runs per
    outcome, duplicates, and which holders ran them. Never fails the status."""
    label = "runs (last hour)"
    try:
        reader = _reader(store, None)
        if not _exists(reader):
            table.add_row(
                label, f"- (no history collection {reader.history}: stores record runs with history=True)"
            )
            return
        summary = reader.get_history_summary()
    except (PyMongoError, JobshelfError, ValueError) as exc:
        table.add_row(label, f"unreadable: {exc}")
        return
    counts = summary.outcomes
    text = (
        f"{summary.runs} ({counts.get('executed', 0)} executed, {counts.get('error', 0)} errors, "
        f"{counts.get('missed', 0)} missed, {counts.get('skipped', 0)} skipped"
    )
    if summary.duplicates:
        text += f", {summary.duplicates} duplicate{'s' if summary.duplicates != 1 else ''}"
    if counts.get("unknown"):
        text += f", {counts['unknown']} malformed"
    table.add_row(label, text + ")")
    if summary.holders:
        ranked = sorted(summary.holders.items(), key=lambda item: (-item[1], item[0]))
        table.add_row("holders (last hour)", ", ".join(f"{holder} {count}" for holder, count in ranked))
