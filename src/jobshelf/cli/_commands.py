"""The subcommands: status, list, inspect, migrate, quarantine."""

from __future__ import annotations

import datetime as dt
import json
import sys
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from typing import Any

import click
from apscheduler.jobstores.base import JobLookupError
from rich.table import Table

from .._core.formats import UNTAGGED_FORMAT
from .._exceptions import JobshelfError
from ..mongodb import MongoDBJobStore
from ..serializers.signed import SignedSerializer
from ._connection import CliError, Connection, NotFound, connection_options, open_store, tag_label
from ._history import history, history_rows
from ._migrate import migrate
from ._text import OUT, printable
from ._views import JobView, disassemble, job_view, shown

__all__ = ["cli"]


def _zone(name: str) -> dt.tzinfo:
    if name.upper() == "UTC":
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown time zone {name!r}; give a name such as UTC or Europe/Berlin") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """See, migrate and repair an APScheduler job collection written by jobshelf or the stock store."""


cli.add_command(migrate)
cli.add_command(history)


@cli.command()
@connection_options
@click.pass_context
def status(ctx: click.Context, /, **options: Any) -> None:
    """Counts per format and state, the earliest next run time, the largest job, the index."""
    connection, store = open_store(ctx, **options)
    views = [JobView(stored) for stored in store.stored_jobs()]  # nothing decoded
    unreadable = connection.unreadable
    states = Counter("unreadable" if view.format in unreadable else view.status for view in views)
    utc = dt.timezone.utc
    scheduled = [
        (when, view)
        for view in views
        if view.status == "scheduled" and view.format not in unreadable and (when := view.next_run_time(utc))
    ]
    earliest = min(scheduled, key=lambda pair: pair[0], default=None)
    largest = max(views, key=lambda view: view.size, default=None)
    indexed = any(
        info.get("key") == [("next_run_time", 1)] for info in store.collection.index_information().values()
    )
    OUT.print(f"jobshelf status: {connection.where}", style="bold")
    table = Table(show_header=False)
    table.add_row(
        "jobs",
        f"{len(views)} ({states['scheduled']} scheduled, {states['paused']} paused, "
        f"{states['quarantined']} quarantined"
        + (f", {states['unreadable']} in formats unreadable here)" if states["unreadable"] else ")"),
    )
    table.add_row("formats", format_counts(connection.formats))
    if earliest is not None:
        when, view = earliest
        table.add_row("earliest next run", f"{when.isoformat()} (job {view.stored.id!r})")
    else:
        table.add_row("earliest next run", "- (nothing scheduled)")
    if largest is not None:
        table.add_row("largest job", f"{largest.stored.id!r}: {largest.size:,} bytes ({largest.format})")
    table.add_row(
        "next_run_time index", "present" if indexed else "missing (created when a scheduler starts)"
    )
    for label, why in sorted(connection.unreadable.items()):
        table.add_row("unreadable here", f"{label}: {why}")
    history_rows(table, store)  # the last hour of the execution history, if there is one
    OUT.print(table)


def format_counts(formats: Mapping[Any, int]) -> str:
    """Jobs per format, untagged (stock) documents counted with the format they are in."""
    counts: Counter[str] = Counter()
    for tag, count in formats.items():
        counts[tag_label(tag)] += count
    parts = []
    for label, count in sorted(counts.items()):
        untagged = formats.get(None, 0) if label == UNTAGGED_FORMAT else 0
        parts.append(
            f"{label} {count}" + (f" ({untagged} untagged, as the stock store writes)" if untagged else "")
        )
    return ", ".join(parts) or "-"


@cli.command(name="list")
@connection_options
@click.option("--format", "only_format", default=None, help="only jobs stored in this format")
@click.option("--quarantined", is_flag=True, help="only quarantined jobs")
@click.option("--json", "as_json", is_flag=True, help="one JSON array of objects (stable keys, ASCII)")
@click.option("--tz", "tz_name", default="UTC", show_default=True, help="zone to show next run times in")
@click.pass_context
def list_jobs(
    ctx: click.Context,
    /,
    only_format: str | None,
    quarantined: bool,
    as_json: bool,
    tz_name: str,
    **options: Any,
) -> None:
    """One row per job: id, name, callable, trigger, next run time, format, size, state."""
    zone = _zone(tz_name)
    connection, store = open_store(ctx, **options)
    views = [
        job_view(store, stored, connection.unreadable)
        for stored in store.stored_jobs()
        if (only_format is None or tag_label(stored.format) == only_format)
        and (not quarantined or stored.quarantine is not None)
    ]
    if as_json:  # json.dumps escapes every control and non-ASCII character
        click.echo(json.dumps([view.as_json(zone) for view in views], indent=2, default=str))
        return
    table = Table("id", "name", "callable", "trigger", f"next run ({tz_name})", "format", "size", "state")
    for view in views:
        when = view.next_run_time(zone)
        table.add_row(
            str(view.stored.id),
            view.field("name"),
            view.field("func") or f"({view.note})",
            view.field("trigger"),
            when.isoformat(sep=" ") if when else "-",
            view.format,
            f"{view.size:,}",
            view.status,
        )
    OUT.print(table)
    OUT.print(f"{len(views)} job{'s' if len(views) != 1 else ''}")


@cli.command()
@connection_options
@click.argument("job_id")
@click.option(
    "--disassemble", "show_opcodes", is_flag=True, help="also list a pickle's opcodes (pickletools)"
)
@click.pass_context
def inspect(ctx: click.Context, /, job_id: str, show_opcodes: bool, **options: Any) -> None:
    """A job's decoded state, without running code from the data (unless you ask for it).

    Formats that decode without running code (msgpack, json) are decoded; pickle is read by a
    restricted unpickler that imports nothing outside a job state (other classes are shown as
    <unresolved ...>). --disassemble lists a pickle's opcodes; --unsafe-run-code really unpickles.
    """
    unsafe_run_code = bool(options["unsafe_run_code"])
    connection, store = open_store(ctx, **options)
    stored = store.stored_job(job_id)
    if stored is None:
        raise NotFound(f"no job {job_id!r} in {store.collection.full_name}; see `jobshelf list`")
    view = job_view(store, stored, connection.unreadable)
    OUT.print(f"job {job_id!r}: {view.status}, format {view.format}, {view.size:,} bytes", style="bold")
    if stored.quarantine is not None:
        record = stored.quarantine
        OUT.print(f"quarantined at {record.get('at')}: {record.get('error_type')}: {record.get('message')}")
    state = view.state
    if unsafe_run_code:
        state = _run_code(store, connection, stored)
        OUT.print("(decoded by running the stored bytes, as --unsafe-run-code asked)")
    elif view.note:
        OUT.print(f"({view.note})")
    for key, value in (state or {}).items():
        OUT.print(f"  {key}: {shown(key, value)}")
    if show_opcodes and isinstance(stored.data, bytes):
        payload = bytes(stored.data)
        serializer = store.serializer_for(stored.format) if store.accepts(stored.format) else None
        if isinstance(serializer, SignedSerializer):
            try:
                payload = serializer.verified_payload(payload)[1]
            except JobshelfError as exc:
                OUT.print(f"(signature: {exc})")
        for line in disassemble(payload):
            OUT.print(line)


def _run_code(store: MongoDBJobStore, connection: Connection, stored: Any) -> dict[str, Any]:
    label = tag_label(stored.format)
    if not store.accepts(stored.format):
        why = connection.unreadable.get(label, "not accepted")
        raise NotFound(f"job {stored.id!r}: format {label!r} is not readable here: {why}")
    try:
        return store.decode_stored(stored)
    except Exception as exc:
        raise NotFound(f"job {stored.id!r} cannot be decoded: {exc}") from None


@cli.group()
def quarantine() -> None:
    """List, restore or remove quarantined jobs."""


@quarantine.command(name="list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="one JSON array of objects (ASCII)")
@click.pass_context
def quarantine_list(ctx: click.Context, /, as_json: bool, **options: Any) -> None:
    """Every quarantined job, oldest first, with the reason."""
    _, store = open_store(ctx, **options)
    records = store.get_quarantined_jobs()
    if as_json:
        rows = [
            {
                **record._asdict(),
                "at": record.at.isoformat() if record.at else None,
                "next_run_time": record.next_run_time.isoformat() if record.next_run_time else None,
            }
            for record in records
        ]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("id", "since", "format", "next run", "error", "reason")
    for record in records:
        table.add_row(
            str(record.id),
            f"{record.at:%Y-%m-%d %H:%M:%S}" if record.at else "-",
            record.format,
            record.next_run_time.isoformat(sep=" ") if record.next_run_time else "-",
            record.error_type,
            record.message,
        )
    OUT.print(table)
    OUT.print(f"{len(records)} quarantined job{'s' if len(records) != 1 else ''}")


@quarantine.command(name="restore")
@connection_options
@click.argument("job_id")
@click.pass_context
def quarantine_restore(ctx: click.Context, /, job_id: str, **options: Any) -> None:
    """Decode a quarantined job again; if it decodes, put it back in the schedule.

    Run it where the application's modules import (its virtualenv), with --allow set to the
    application's allowed_callables, so the job's callable is allowed and resolves. A job that
    does not decode with these options stays quarantined with the reason it has.
    """
    connection, store = open_store(ctx, **options)
    stored = store.stored_job(job_id)
    if stored is None or stored.quarantine is None:
        raise NotFound(f"no quarantined job {job_id!r}; see `jobshelf quarantine list`")
    label = tag_label(stored.format)
    if not store.accepts(stored.format):
        why = connection.unreadable.get(label, "not accepted")
        raise NotFound(f"job {job_id!r} stays quarantined: its format {label!r} is not readable here: {why}")
    try:
        store.decode_state(job_id)  # first, so that options which cannot read it leave its reason
    except JobLookupError:
        raise NotFound(f"no quarantined job {job_id!r}; see `jobshelf quarantine list`") from None
    except JobshelfError as exc:
        raise NotFound(
            f"job {job_id!r} is still quarantined (its reason unchanged): with these options it does "
            f"not decode either: {exc}"
        ) from None
    try:
        job = store.restore_quarantined_job(job_id)
    except JobLookupError:
        raise NotFound(f"no quarantined job {job_id!r}; see `jobshelf quarantine list`") from None
    except JobshelfError as exc:
        raise NotFound(f"{exc} (it stays quarantined with this reason)") from None
    when = job.next_run_time.isoformat() if job.next_run_time else "paused"
    OUT.print(f"job {job_id!r} restored: next run {when}")


@quarantine.command(name="remove")
@connection_options
@click.argument("job_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def quarantine_remove(ctx: click.Context, /, job_id: str, yes: bool, **options: Any) -> None:
    """Delete a quarantined job (only a quarantined one)."""
    _, store = open_store(ctx, **options)
    stored = store.stored_job(job_id)
    if stored is None or stored.quarantine is None:
        raise NotFound(f"no quarantined job {job_id!r}; see `jobshelf quarantine list`")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("remove deletes the job: pass --yes to confirm")
        click.confirm(printable(f"Delete quarantined job {job_id!r}?"), abort=True)
    store.remove_job(job_id)
    OUT.print(f"job {job_id!r} removed")
