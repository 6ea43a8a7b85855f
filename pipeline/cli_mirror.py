"""``python -m pipeline mirror push|pull|status``: the store's backup mirrors.

Mirrors come from ``[tool.pipeline] mirrors`` / ``PIPELINE_MIRRORS``, or ``--mirror`` (repeatable)."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .cli import _errors, _open, app, out
from .config import Settings
from .errors import ConfigError
from .units import size

mirror_app = typer.Typer(help="Backup mirrors of the store: copy to, copy from, compare.", no_args_is_help=True)
app.add_typer(mirror_app, name="mirror")

_STORE = typer.Option(None, "--store", help="Store URL or path.")
_MIRRORS = typer.Option([], "--mirror", help="A mirror (path or URL); repeat for more. Default: the configured ones.")
_CHECK = typer.Option(False, "--check", help="Verify the receiving store first: its corrupt copies are replaced.")


def _primary(store: Optional[str], mirrors: list[str], create: bool, read_only: bool = False) -> Any:
    settings = Settings.load(store=store, mirrors=tuple(mirrors) or None)
    if not settings.mirrors:
        raise ConfigError(
            "no mirrors configured: set [tool.pipeline] mirrors = [...] or PIPELINE_MIRRORS, "
            "or pass --mirror PATH_OR_URL"
        )
    return _open(settings, create=create, read_only=read_only)


def _sync_table(title: str, reports: list[Any]) -> bool:
    table = Table("into", "entries", "objects", "bytes", "tags", "dropped", "failed", title=title)
    for r in reports:
        table.add_row(escape(r.url), str(r.entries), str(r.objects), size(r.bytes), str(r.tags), str(r.dropped),
                      str(len(r.failed)))  # fmt: skip
    out.print(table)
    for r in reports:
        for why in r.failed:
            out.print(f"not copied into {escape(r.url)}: {escape(why)}", highlight=False, soft_wrap=True)
    return all(not r.failed for r in reports)


@mirror_app.command("push")
@_errors
def push(store: Optional[str] = _STORE, mirror: list[str] = _MIRRORS, check: bool = _CHECK) -> None:
    """Copy to each mirror every entry, object and tag it lacks (objects first, manifests last), and
    drop there the entries gc dropped from the store."""
    _sync("push", store, mirror, check)


@mirror_app.command("pull")
@_errors
def pull(store: Optional[str] = _STORE, mirror: list[str] = _MIRRORS, check: bool = _CHECK) -> None:
    """Copy into the store every entry, object and tag a mirror holds and it lacks (never an entry gc dropped)."""
    _sync("pull", store, mirror, check)


def _sync(direction: str, store: Optional[str], mirror: list[str], check: bool) -> None:
    from .store import mirror_sync

    s = _primary(store, mirror, create=direction == "pull")
    reports = getattr(mirror_sync, direction)(s, s.mirrors, check=check)
    if not _sync_table(f"mirror {direction}", reports):
        raise typer.Exit(1)


@mirror_app.command("status")
@_errors
def status(store: Optional[str] = _STORE, mirror: list[str] = _MIRRORS) -> None:
    """What is missing where: entries and objects (with bytes) each mirror lacks, and the store lacks."""
    from .store.mirror_sync import status as status_all

    s = _primary(store, mirror, create=False, read_only=True)
    table = Table("mirror", "state", "missing in mirror", "missing in store", title=f"mirrors of {s.url}")
    reports = status_all(s, s.mirrors)
    for r in reports:
        if not r.reachable:
            table.add_row(escape(r.url), f"[red]unreachable[/red] {escape(r.error)}", "", "")
            continue
        state = "[green]in sync[/green]" if r.in_sync else "[yellow]behind[/yellow]"
        if r.error:  # a local mirror not created yet
            state += f" ({escape(r.error)})"
        stale = f"; {r.dropped_in_mirror} entries gc dropped from the store" if r.dropped_in_mirror else ""
        table.add_row(escape(r.url), state, _side(r.missing_in_mirror) + stale, _side(r.missing_in_primary))
    out.print(table)
    if not all(r.reachable for r in reports):
        raise typer.Exit(1)


def _side(side: Any) -> str:
    tags = f", {side.tags} tags" if side.tags else ""
    objects = f"{side.objects} objects ({size(side.object_bytes)})"
    return f"{side.entries} entries ({size(side.entry_bytes)}), {objects}{tags}"


def print_repair(s: Any, problems: Any) -> None:
    """``verify --repair``: restore each problem from the mirrors; say what could not be (exit 1)."""
    from .store.mirror_sync import repair

    if s.mirrors is None:
        raise ConfigError("verify --repair: no mirrors configured (set [tool.pipeline] mirrors or PIPELINE_MIRRORS)")
    if not problems:
        out.print("nothing to repair")
        return
    result = repair(s, problems)
    for what in result.repaired:
        out.print(f"repaired from a mirror: {escape(what)}", highlight=False, soft_wrap=True)
    for what in result.unrepaired:
        out.print(f"[red]not repaired[/red] (no mirror holds a good copy): {escape(what)}", soft_wrap=True)
    out.print(f"{len(result.repaired)} repaired, {len(result.unrepaired)} not repaired")
    if result.unrepaired:
        raise typer.Exit(1)
