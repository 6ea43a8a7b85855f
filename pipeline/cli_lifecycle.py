"""``python -m pipeline gc`` (retention policies, then unreferenced objects), ``tag`` and
``untag``: thin commands over :mod:`pipeline.store.retention`, registered on :data:`pipeline.cli.app`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .cli import _errors, _store, app, out
from .units import size


@app.command("gc")
@_errors
def gc_command(
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would be dropped and freed."),
    grace: float = typer.Option(3600.0, "--grace", help="Keep unreferenced objects younger than this (s)."),
    keep_latest: Optional[int] = typer.Option(None, "--keep-latest", help="Keep the N newest entries of each stage."),
    keep_best: Optional[str] = typer.Option(
        None, "--keep-best", help="Keep the K best entries by a metric: K:METRIC[:min|max]."
    ),
    older_than: Optional[float] = typer.Option(None, "--older-than", help="Drop entries older than DAYS."),
    max_bytes: Optional[str] = typer.Option(None, "--max-bytes", help="Keep the newest entries within SIZE (10GB)."),
    failed: bool = typer.Option(False, "--failed", help="Drop entries only failed, crashed or abandoned runs wrote."),
) -> None:
    """Drop the entries the retention policy does not keep (the flags, else tool.pipeline.retention in pyproject),
    then delete objects no manifest references. Pinned entries, best-so-far records, the results
    of each flow's latest successful run and a live run's resume checkpoint always stay."""
    from .store.lifecycle import Retention, policy_of
    from .store.retention import gc

    flags = {"keep_latest": keep_latest, "keep_best": keep_best, "older_than": older_than, "max_bytes": max_bytes,
             "failed": failed or None}  # fmt: skip
    given = {k: v for k, v in flags.items() if v is not None}
    retention = Retention(policy_of(given, "the gc options")) if given else Retention.configured()
    report = gc(_store(store, read_only=dry_run), retention, dry_run=dry_run, grace_seconds=grace)
    if report.plan is not None:
        _print_plan(report, dry_run)
    drop, delete = ("would drop", "would delete") if dry_run else ("dropped", "deleted")
    out.print(
        f"{report.live_objects} live objects kept; {drop} {_n(report.dropped_manifests, 'manifest')}; {delete} "
        f"{_n(report.deleted_objects, 'unreferenced object')} ({size(report.deleted_bytes)}) and "
        f"{_n(report.deleted_temp_files, 'temp file')}" + _dirs(report.removed_dirs, dry_run),
        highlight=False,
    )
    if report.records.kept:
        out.print(f"kept {_n(report.records.kept, 'old drop record')}: a mirror was unreachable, not configured, or "
                  "still held the dropped entry (dropped there now)", highlight=False)  # fmt: skip
    if report.indexed:
        out.print("(from the store's manifest index: objects written since the last gc by writers that never "
                  "committed are not counted; gc itself lists the store)", highlight=False)  # fmt: skip


def _dirs(count: int, dry_run: bool) -> str:
    """The empty checkpoint key directories gc removes (older than its grace), when there are any."""
    if not count:
        return ""
    noun = "directory" if count == 1 else "directories"
    return f"; {'would remove' if dry_run else 'removed'} {count} empty checkpoint {noun}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _print_plan(report, dry_run: bool) -> None:
    title = "gc --dry-run: nothing freed" if dry_run else "gc"
    table = Table("stage", "entries", "kept", "dropped", "bytes freed", "why", title=title)
    attributed = 0
    for row in report.plan.by_stage():
        attributed += row.freed_bytes
        table.add_row(escape(row.stage), row.what, str(row.kept), str(row.dropped), size(row.freed_bytes),
                      escape(row.why))  # fmt: skip
    rest = report.deleted_bytes - attributed
    if rest > 0:
        table.add_row("", "unreferenced objects", "", "", size(rest), "no manifest references them")
    out.print(table)


@app.command("tag")
@_errors
def tag_command(
    key: str = typer.Argument(..., help="A result key (a prefix is enough)."),
    name: str = typer.Argument(..., help="The tag, e.g. prod."),
    step: Optional[int] = typer.Option(None, "--step", help="Tag that key's checkpoint of this step instead."),
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
) -> None:
    """Tag a result (or a checkpoint): tagged entries are pinned, gc and retention never drop them."""
    from .store.lifecycle import find_entry

    s = _store(store)
    m = find_entry(s, key, step)
    s.tags.add(name, m.stage, m.key, m.step)
    out.print(f"tagged {m.stage} {m.key}{_at(m.step)} {name!r}", highlight=False, soft_wrap=True)


@app.command("untag")
@_errors
def untag_command(
    key: str = typer.Argument(..., help="A result key (a prefix is enough)."),
    name: str = typer.Argument(..., help="The tag to remove."),
    step: Optional[int] = typer.Option(None, "--step", help="Untag that key's checkpoint of this step instead."),
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
) -> None:
    """Remove a tag from a result (or a checkpoint); gc's retention may drop it from then on."""
    from .errors import PipelineError
    from .store.lifecycle import find_entry

    s = _store(store)
    m = find_entry(s, key, step)
    if not s.tags.remove(name, m.stage, m.key, m.step):
        have = ", ".join(sorted(s.tags.of(m.stage, m.key, m.step))) or "none"
        raise PipelineError(f"{m.stage} {m.key}{_at(m.step)} has no tag {name!r} (its tags: {have})")
    out.print(f"untagged {m.stage} {m.key}{_at(m.step)} {name!r}", highlight=False, soft_wrap=True)


def _at(step: int | None) -> str:
    return "" if step is None else f" step {step}"
