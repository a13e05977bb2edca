"""``jobshelf migrate``: rewrite every job in another format, in batches, never over a newer write."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import click
from pymongo.errors import PyMongoError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._core.formats import UNTAGGED_FORMAT
from .._serializer import format_name
from ._connection import CliError, connection_options, open_store, serializer_for, tag_label
from ._text import ERR, OUT, printable

__all__ = ["migrate"]

#: Outcomes after which a job is not in the target format (it is left exactly as it was).
LEFT = ("quarantined", "undecodable", "unencodable", "changed", "missing")


@click.command()
@connection_options
@click.option("--to", "target_spec", required=True, help="the format to rewrite every job in (e.g. msgpack)")
@click.option("--dry-run", is_flag=True, help="write nothing; report what would happen")
@click.option(
    "--batch-size", default=100, show_default=True, type=click.IntRange(1),
    help="jobs migrated between two progress reports",
)  # fmt: skip
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def migrate(
    ctx: click.Context, /, target_spec: str, dry_run: bool, batch_size: int, yes: bool, **options: Any
) -> None:
    """Rewrite every job in another format; a job changed meanwhile is never overwritten.

    Jobs are read with allowed_callables set to --allow: a job is rewritten only if its callable
    is allowed (give your application's list). Each job is replaced only if it is unchanged since
    it was read; interrupted and run again, it carries on. A job the target cannot hold is left
    exactly as it was and listed with the reason. Progress is reported after each batch.
    """
    target = serializer_for(target_spec)  # writes as itself; reading is what --allow restricts
    connection, store = open_store(ctx, **options)
    name = format_name(target)
    jobs = [(stored.id, stored.format) for stored in store.stored_jobs()]
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise CliError("migrate rewrites documents: pass --yes to confirm (or --dry-run first)")
        click.confirm(printable(f"Rewrite {len(jobs)} jobs in {connection.where} as {name}?"), abort=True)
    outcomes: Counter[str] = Counter()
    left: list[tuple[Any, str, str]] = []
    batches = (len(jobs) + batch_size - 1) // batch_size
    with _progress(len(jobs), batches, f"{'checking' if dry_run else 'migrating'} to {name}") as report:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            for job_id, tag in batch:
                try:
                    result = store.migrate_job(job_id, target, dry_run=dry_run)
                except PyMongoError as exc:
                    raise CliError(
                        f"the server failed during the migration ({exc}); run it again to carry on"
                    ) from None
                outcomes[result.outcome] += 1
                if result.outcome in LEFT:
                    why = connection.unreadable.get(tag_label(tag))
                    if result.outcome == "undecodable" and why and not store.accepts(tag):
                        detail = f"format {tag_label(tag)!r} is not readable here: {why}"
                    else:
                        detail = result.detail
                    left.append((job_id, result.outcome, detail))
            report(len(batch))
    _summary(outcomes, left, name, dry_run)
    if outcomes["undecodable"] and connection.allowed == []:
        ERR.print(
            "No --allow given, and a job is read only if its callable is allowed: pass --allow with "
            "your application's allowed_callables (the modules its jobs call); `jobshelf inspect ID` "
            "shows what a job calls."
        )
    if name == UNTAGGED_FORMAT and left:
        ERR.print(
            f"Before going back to the stock MongoDBJobStore: it deletes every job it "
            f"cannot unpickle, and {len(left)} job(s) above are not stock pickle. Restore or remove them."
        )
    if left and not dry_run:
        ctx.exit(3)


@contextlib.contextmanager
def _progress(total: int, batches: int, label: str) -> Iterator[Callable[[int], None]]:
    """Report each finished batch: a rich progress bar on a terminal, a line elsewhere (logs, CI)."""
    if ERR.is_terminal:
        columns = (
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(),
        )  # fmt: skip
        with Progress(*columns, console=ERR) as progress:
            task = progress.add_task(printable(label), total=total)
            yield lambda n: progress.advance(task, n)
        return
    done = [0, 0]

    def report(n: int) -> None:
        done[0] += n
        done[1] += 1
        click.echo(printable(f"{label}: {done[0]}/{total} (batch {done[1]} of {batches})"), err=True)

    yield report


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
