"""The subcommands: status, list, inspect, migrate, quarantine."""

from __future__ import annotations

import datetime as dt
import json
import sys
import zoneinfo
from collections import Counter
from typing import Any

import click
from apscheduler.jobstores.base import JobLookupError
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._exceptions import JobshelfError
from .._serializer import format_name
from ..mongodb import MongoDBJobStore
from ._connection import CliError, Connection, NotFound, connection_options, serializer_for
from ._views import disassemble, job_view

__all__ = ["cli"]

# Off a terminal (a pipe, a log), tables are laid out wide rather than squeezed to 80 columns.
# markup=False: stored ids, names and triggers ("cron[hour='2']") are data, never console markup.
OUT = Console(width=None if sys.stdout.isatty() else 200, markup=False, highlight=False)
ERR = Console(stderr=True, markup=False, highlight=False)
#: Outcomes after which a job is not in the target format (it is left exactly as it was).
LEFT = ("quarantined", "undecodable", "unencodable", "changed", "missing")


def _zone(name: str) -> dt.tzinfo:
    if name.upper() == "UTC":
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown time zone {name!r}; give a name such as UTC or Europe/Berlin") from None


def _open(ctx: click.Context, **options: Any) -> tuple[Connection, MongoDBJobStore]:
    connection = Connection(**options)
    store = connection.open()
    ctx.call_on_close(store.client.close)
    return connection, store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """See, migrate and repair an APScheduler job collection written by jobshelf or the stock store."""


@cli.command()
@connection_options
@click.pass_context
def status(ctx: click.Context, /, **options: Any) -> None:
    """Counts per format and state, the earliest next run time, the largest job, the index."""
    connection, store = _open(ctx, **options)
    views = [job_view(store, stored) for stored in store.stored_jobs()]
    states = Counter(view.status for view in views)
    formats = Counter(view.format for view in views)
    scheduled = [view for view in views if view.status == "scheduled"]
    earliest = min(scheduled, key=lambda view: view.stored.next_run_time, default=None)
    largest = max(views, key=lambda view: view.size, default=None)
    indexed = any(
        info.get("key") == [("next_run_time", 1)] for info in store.collection.index_information().values()
    )
    OUT.print(f"jobshelf status: {connection.where}", style="bold")
    table = Table(show_header=False)
    table.add_row(
        "jobs",
        f"{len(views)} ({states['scheduled']} scheduled, {states['paused']} paused, "
        f"{states['quarantined']} quarantined)",
    )
    table.add_row("formats", ", ".join(f"{fmt} {count}" for fmt, count in sorted(formats.items())) or "-")
    if earliest is not None:
        when = earliest.next_run_time(dt.timezone.utc)
        table.add_row(
            "earliest next run", f"{when.isoformat() if when else '-'} (job {earliest.stored.id!r})"
        )
    else:
        table.add_row("earliest next run", "- (nothing scheduled)")
    if largest is not None:
        table.add_row("largest job", f"{largest.stored.id!r}: {largest.size:,} bytes ({largest.format})")
    table.add_row(
        "next_run_time index", "present" if indexed else "missing (created when a scheduler starts)"
    )
    for fmt, why in sorted(connection.unreadable.items()):
        table.add_row("unreadable here", f"{fmt}: {why}")
    OUT.print(table)


@cli.command(name="list")
@connection_options
@click.option("--format", "only_format", default=None, help="only jobs stored in this format")
@click.option("--quarantined", is_flag=True, help="only quarantined jobs")
@click.option("--json", "as_json", is_flag=True, help="one JSON array of objects (stable keys)")
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
    _, store = _open(ctx, **options)
    views = [job_view(store, stored) for stored in store.stored_jobs()]
    views = [
        v
        for v in views
        if (only_format is None or v.format == only_format) and (not quarantined or v.status == "quarantined")
    ]
    if as_json:
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
    _, store = _open(ctx, **options)
    stored = next((s for s in store.stored_jobs() if s.id == job_id), None)
    if stored is None:
        raise NotFound(f"no job {job_id!r} in {store.collection.full_name}; see `jobshelf list`")
    view = job_view(store, stored)
    OUT.print(f"job {job_id!r}: {view.status}, format {view.format}, {view.size:,} bytes", style="bold")
    if stored.quarantine:
        record = stored.quarantine
        OUT.print(f"quarantined at {record.get('at')}: {record.get('error_type')}: {record.get('message')}")
    state = view.state
    if unsafe_run_code:
        serializer = store.serializer_for(view.format)
        if serializer is None:
            raise NotFound(f"format {view.format!r} is not readable here")
        try:
            state = store.decode_stored(stored)
        except Exception as exc:
            raise NotFound(f"job {job_id!r} cannot be decoded: {exc}") from None
        OUT.print("(decoded by running the stored bytes, as --unsafe-run-code asked)")
    elif view.note:
        OUT.print(f"({view.note})")
    if state is not None:
        for key, value in state.items():
            text = str(value) if key == "trigger" else repr(value)
            OUT.print(f"  {key}: {text}")
    data = stored.data
    if show_opcodes and isinstance(data, bytes):
        serializer = store.serializer_for(view.format)
        payload = data
        if serializer is not None and hasattr(serializer, "verified_payload"):
            try:
                payload = serializer.verified_payload(data)[1]
            except JobshelfError as exc:
                OUT.print(f"(signature: {exc})")
        OUT.print(disassemble(payload))


@cli.command()
@connection_options
@click.option("--to", "target_spec", required=True, help="the format to rewrite every job in (e.g. msgpack)")
@click.option("--dry-run", is_flag=True, help="write nothing; report what would happen")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1), help="jobs per batch")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def migrate(
    ctx: click.Context, /, target_spec: str, dry_run: bool, batch_size: int, yes: bool, **options: Any
) -> None:
    """Rewrite every job in another format; a job changed meanwhile is never overwritten.

    Each job is replaced only if it is unchanged since it was read; interrupted and run again, it
    carries on. A job the target cannot hold is left exactly as it was and listed with the reason.
    """
    try:
        target = serializer_for(target_spec)  # writes as itself; reading is what --allow restricts
    except JobshelfError as exc:
        raise CliError(str(exc)) from None
    connection, store = _open(ctx, **options)
    name = format_name(target)
    ids = [stored.id for stored in store.stored_jobs()]
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise CliError("migrate rewrites documents: pass --yes to confirm (or --dry-run first)")
        click.confirm(f"Rewrite {len(ids)} jobs in {connection.where} as {name}?", abort=True)
    outcomes: Counter[str] = Counter()
    left: list[tuple[Any, str, str]] = []
    with _progress(len(ids), f"{'checking' if dry_run else 'migrating'} to {name}") as advance:
        for start in range(0, len(ids), batch_size):
            for job_id in ids[start : start + batch_size]:
                try:
                    result = store.migrate_job(job_id, target, dry_run=dry_run)
                except PyMongoError as exc:
                    raise CliError(
                        f"the server failed during the migration ({exc}); run it again to carry on"
                    ) from None
                outcomes[result.outcome] += 1
                if result.outcome in LEFT:
                    left.append((job_id, result.outcome, result.detail))
                advance(1)
    _summary(outcomes, left, name, dry_run)
    if name == "pickle" and left:
        ERR.print(
            f"Before going back to the stock MongoDBJobStore: it deletes every job it "
            f"cannot unpickle, and {len(left)} job(s) above are not stock pickle. Restore or remove them."
        )
    if left and not dry_run:
        ctx.exit(3)


def _progress(total: int, label: str) -> Any:
    """A rich progress bar on a terminal; a line per tenth elsewhere (logs, CI)."""
    import contextlib

    @contextlib.contextmanager
    def bar() -> Any:
        if ERR.is_terminal:
            columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=ERR) as progress:
                task = progress.add_task(label, total=total)
                yield lambda n: progress.advance(task, n)
            return
        done = [0]
        step = max(1, total // 10)

        def advance(n: int) -> None:
            done[0] += n
            if done[0] % step == 0 or done[0] == total:
                click.echo(f"{label}: {done[0]}/{total}", err=True)

        yield advance

    return bar()


def _summary(outcomes: Counter[str], left: list[tuple[Any, str, str]], name: str, dry_run: bool) -> None:
    OUT.print(f"migrate to {name}{' (dry run: nothing written)' if dry_run else ''}", style="bold")
    table = Table("outcome", "jobs")
    for outcome in ("migrated", "would migrate", "already", *LEFT):
        if outcomes[outcome]:
            table.add_row(outcome, str(outcomes[outcome]))
    OUT.print(table)
    if left:
        OUT.print("left exactly as they were:", style="bold")
        reasons = Table("id", "left because", "detail")
        for job_id, outcome, detail in left:
            reasons.add_row(str(job_id), outcome, detail)
        OUT.print(reasons)


@cli.group()
def quarantine() -> None:
    """List, restore or remove quarantined jobs."""


@quarantine.command(name="list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="one JSON array of objects")
@click.pass_context
def quarantine_list(ctx: click.Context, /, as_json: bool, **options: Any) -> None:
    """Every quarantined job, oldest first, with the reason."""
    _, store = _open(ctx, **options)
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

    Run it where the application's modules import (its virtualenv), so the callable resolves.
    """
    _, store = _open(ctx, **options)
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
    _, store = _open(ctx, **options)
    if job_id not in {record.id for record in store.get_quarantined_jobs()}:
        raise NotFound(f"no quarantined job {job_id!r}; see `jobshelf quarantine list`")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("remove deletes the job: pass --yes to confirm")
        click.confirm(f"Delete quarantined job {job_id!r}?", abort=True)
    store.remove_job(job_id)
    OUT.print(f"job {job_id!r} removed")
