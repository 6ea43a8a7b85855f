"""``python -m pipeline report`` (and the other "what happened" commands): thin commands over
:mod:`pipeline.report` and :mod:`pipeline.history`, registered on :data:`pipeline.cli.app`."""

from __future__ import annotations

from typing import Optional

import typer

from .cli import _errors, _store, app, out


@app.command("report")
@_errors
def report(
    run: Optional[str] = typer.Argument(None, help="Run id (a prefix is enough); default: the newest run."),
    folder: str = typer.Option("reports", "--out", help="Folder the HTML page is written to."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Write one self-contained HTML page about a run: timeline, training curves, search, checkpoints."""
    from .report import write_report

    path = write_report(_store(store), folder, run)
    out.print(f"report: {path}", highlight=False, soft_wrap=True)
