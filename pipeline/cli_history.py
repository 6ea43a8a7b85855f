"""``python -m pipeline report`` (and the other "what happened" commands): thin commands over
:mod:`pipeline.report` and :mod:`pipeline.history`, registered on :data:`pipeline.cli.app`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .cli import _errors, _store, app, out
from .errors import PipelineError


@app.command("report")
@_errors
def report(
    run: Optional[str] = typer.Argument(None, help="Run id (a prefix is enough); default: the newest run."),
    folder: str = typer.Option("reports", "--out", help="Folder the HTML page is written to."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Write one self-contained HTML page about a run: timeline, training curves, search, checkpoints."""
    from .report import write_report

    path = write_report(_store(store, read_only=True), folder, run)
    out.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command("runs")
@_errors
def runs_command(
    limit: int = typer.Option(20, "--limit", help="Show at most this many runs (newest first)."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Past runs, newest first: id, flow, started, status, hits/misses, time saved."""
    from .history import runs

    found = runs(_store(store, read_only=True))
    table = Table("run", "flow", "started", "status", "stages", "hits", "misses", "saved s", "wall s",
                  title=f"{len(found)} runs" + (f" (newest {limit})" if len(found) > limit else ""))  # fmt: skip
    for r in found[:limit]:
        table.add_row(r.run_id, r.flow, _when(r.started), r.status, str(len(r.stages)), str(r.hits), str(r.misses),
                      f"{r.seconds_saved:.2f}", f"{r.wall_seconds:.1f}")  # fmt: skip
    out.print(table)


@app.command("history")
@_errors
def history_command(
    stage: str = typer.Argument(..., help="A stage name."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Every version of a stage, newest first, with what changed from the closest older one."""
    from .history import versions

    s = _store(store, read_only=True)
    found = versions(s, stage)
    if not found:
        raise PipelineError(f"no results of stage {stage!r} (see `python -m pipeline ls`)")
    tags = s.tags.by_entry()
    table = Table("version", "key", "created", "run", "tags", "params", "changed", title=f"stage {stage}")
    for v in found:
        m = v.manifest
        params = ", ".join(f"{k}={p['repr']}" for k, p in m.params.items())
        why = "first version" if v.base is None else f"vs @{v.base}: " + "; ".join(v.changes)
        tagged = ", ".join(sorted(tags.get((m.stage, m.key, None), ())))
        table.add_row(f"{stage}@{v.number}", m.key[5:17], m.created[:19], m.run_id[:8], tagged, params, why)
    out.print(table)


@app.command("diff")
@_errors
def diff_command(
    a: str = typer.Argument(..., help="A result key (prefix), STAGE@N, a stage name, a tag or a run id."),
    b: str = typer.Argument(..., help="The same kinds as A."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Two results (or runs) side by side: params, metrics, code, inputs, versions, sizes; changes first."""
    from .diff import diff

    d = diff(_store(store, read_only=True), a, b)
    if as_json:
        print(d.to_json())
        return
    table = Table("", "section", "name", "A", "B", title=f"A = {d.a}\nB = {d.b}")
    for r in d.ordered():
        mark = "[yellow]*[/]" if r.changed else ""
        table.add_row(mark, r.section, r.name, r.a, r.b)
    out.print(table)
    out.print(f"{len(d.changed)} of {len(d.rows)} rows differ")


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


# -- show RUN, show KEY --curves: the registered `show` extended, everything else passed on ------
_show = next(c for c in app.registered_commands if c.name == "show")
_show_stage_or_key = _show.callback


@_errors
def show(
    what: str = typer.Argument(..., help="A run id, a result key (a prefix is enough), a stage or a search name."),
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
    curves: bool = typer.Option(False, "--curves", help="A training result's per-epoch metrics table."),
    key: Optional[str] = typer.Option(
        None, "--key", help="With a search name: the search with this key (a prefix is enough); else the latest run's."
    ),
    as_json: bool = typer.Option(False, "--json", help="A result's raw manifest as JSON."),
) -> None:
    """Show a run (its stages, keys, hit/miss, seconds, params); a result by key or STAGE@N
    (params, metrics, training metadata, outputs, code, versions; ``--curves``: its per-epoch
    metrics; ``--json``: the manifest); a stage's results by name; a search's trials and best."""
    from .diff import resolve
    from .history import find_run

    s = _store(store, read_only=True)
    if curves:
        return _print_curves(s, resolve(s, what))
    if key is None and s.latest(what) is None and not list(s.manifests(f"{what}.trial")):
        try:
            run = find_run(s, what)
        except PipelineError:
            run = None
        if run is not None:
            return _print_run_record(s, run)
        try:
            manifest = resolve(s, what)
        except PipelineError:
            manifest = None  # not a key either: the stage/search/key lookup below says so
        if manifest is not None:
            return out.print_json(manifest.to_json().decode()) if as_json else _print_facts(s, manifest)
    return _show_stage_or_key(what=what, store=store, key=key)


_show.callback = show


def _print_run_record(s, run) -> None:
    table = Table("stage", "key", "result", "seconds", "saved s", "params",
                  title=f"run {run.run_id} ({run.status}, started {_when(run.started)})")  # fmt: skip
    for st in run.stages:
        m = s.manifest(st.stage, st.key)
        params = ", ".join(f"{k}={p['repr']}" for k, p in m.params.items()) if m is not None else "(result gone)"
        table.add_row(st.stage, st.key[5:17], "[green]hit[/]" if st.hit else "[yellow]miss[/]", f"{st.seconds:.2f}",
                      f"{st.saved:.2f}" if st.hit else "", params)  # fmt: skip
    out.print(table)
    saved, wall = run.seconds_saved, run.wall_seconds
    out.print(f"{run.hits} cached, {run.misses} computed, {saved:.2f} s saved, {wall:.1f} s wall")
    if run.params:
        from .diff import run_params_flat

        shown = ", ".join(f"{k}={v}" for k, v in run_params_flat(run).items())
        out.print(f"flow {run.flow or '(unknown)'} ran with: {shown}", highlight=False, soft_wrap=True)


def _print_facts(s, manifest) -> None:
    from .describe import describe

    table = Table("", "", "", title=f"{manifest.stage} {manifest.key}", show_header=False)
    last = None
    for f in describe(s, manifest):
        table.add_row(f.section if f.section != last else "", f.name, f.value, end_section=False)
        last = f.section
    out.print(table)


def _print_curves(s, manifest) -> None:
    from .tracking import training_record

    record = training_record(s, manifest.stage, manifest.key)
    if record is None:
        raise PipelineError(f"result {manifest.key} of stage {manifest.stage!r} has no training checkpoints")
    names = list(dict.fromkeys(k for h in record.history for k in h if k != "epoch"))
    kept = {c.step for c in record.checkpoints}
    title = f"{manifest.stage} {manifest.key}: {record.epochs} epochs" + (" (stopped early)" if record.stopped else "")
    table = Table("epoch", *names, "checkpoint", title=title)
    for h in record.history:
        e = int(h["epoch"])
        mark = ("kept" if e in kept else "") + (" best" if e == record.best_step else "")
        table.add_row(str(e), *(f"{h[n]:.5g}" if n in h else "" for n in names), mark.strip())
    out.print(table)
