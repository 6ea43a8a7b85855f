"""``python -m pipeline``: a thin typer app over the library. Errors are one line on stderr."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import Settings
from .errors import PipelineError
from .progress_bar import use_console
from .units import size

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stage cache and checkpoints for ML pipelines.")
out = Console()
err = Console(stderr=True)
_state = {"debug": False}
DEFAULT_FLOW = Settings.flow


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PipelineError as e:
            if _state["debug"]:
                raise
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    _state["debug"] = debug
    for console in (out, err):  # into a file or pipe: full keys and bars, never cut at 80 columns
        console.width = None if console.is_terminal else 1000  # type: ignore[assignment]
    use_console(out)  # progress bars of long work: with the epoch bars, on a terminal only
    warnings.showwarning = _one_line_warning


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None):
    """A warning as one line on stderr (no echoed source line)."""
    where = f" ({filename}:{lineno})" if _state["debug"] else ""
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}{where}", highlight=False, soft_wrap=True)


def _no_pipeline_traceback(record: logging.LogRecord) -> bool:
    """A log record of a PipelineError (its message says what to do) keeps its line, loses the traceback."""
    if record.exc_info and isinstance(record.exc_info[1], PipelineError):
        record.exc_info, record.exc_text = None, None
    return True


def _store(url: Optional[str], create: bool = False, read_only: bool = False):
    return _open(Settings.load(store=url), create=create, read_only=read_only)


def _open(settings: Settings, create: bool = True, read_only: bool = False):
    """The store the settings name: opened or created for a run; for other commands opened
    as it is (nothing created); ``read_only`` for those that only look (``ls``, ``show``…):
    they write nothing, in the store or its mirrors (``Store(read_only=True)``)."""
    from .store import Store

    return Store(settings.store, fsync=settings.fsync, create=create, read_only=read_only, mirrors=settings.mirrors,
                 mirror_mode=settings.mirror_mode)  # fmt: skip


def _open_for_plan(settings: Settings):
    """The store ``status`` reads; before the first run (no local store yet) an empty one, so
    that it says what the first run computes (nothing is created on disk)."""
    import os
    import uuid

    from .errors import StoreError
    from .store import Store

    try:
        return _open(settings, create=False, read_only=True)
    except StoreError:
        if "://" in settings.store or os.path.exists(settings.store):
            raise
        err.print(f"no store at {settings.store} yet: the first run computes every stage", highlight=False)
        return Store(f"memory://pipeline-status-{uuid.uuid4().hex}", fsync=False)


@app.command("show")
@_errors
def show(
    what: str = typer.Argument(..., help="A result key (a prefix is enough), a stage name or a search name."),
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
    key: Optional[str] = typer.Option(
        None, "--key", help="With a search name: the search with this key (a prefix is enough); else the latest run's."
    ),
) -> None:
    """Show one manifest by key; a stage's results by name; a search's trials and best (the
    search the latest run used, or the one --key names)."""
    s = _store(store, read_only=True)
    trials = list(s.manifests(f"{what}.trial"))
    if trials or key is not None:
        return _show_search(s, what, trials, key)
    results = list(s.manifests(what))
    if results:
        table = Table("key", "created", "params", "bytes", "compute s", title=f"stage {what}")
        for m in sorted(results, key=lambda m: m.created, reverse=True):
            params = ", ".join(f"{k}={v['repr']}" for k, v in m.params.items())
            table.add_row(m.key, m.created[:19], params, size(m.bytes), f"{m.compute_seconds:.2f}")
        out.print(table)
        return None
    key = what if what.startswith("xxh3:") else "xxh3:" + what
    matches = [m for m in s.manifests() if m.key.startswith(key)]
    if not matches:
        raise PipelineError(f"no stage, search or result key {what!r} in {s.url} (see `python -m pipeline ls`)")
    if len(matches) > 1:
        raise PipelineError(f"key prefix {what} is ambiguous ({len(matches)} results): give more characters")
    out.print_json(matches[0].to_json().decode())
    tags = s.tags.of(matches[0].stage, matches[0].key)
    out.print(f"tags: {', '.join(sorted(tags)) if tags else 'none'}", highlight=False)
    return None


def _show_search(s: Any, name: str, manifests: list[Any], key: str | None) -> None:
    """The search named ``name`` the question is about (the latest run's, or ``key``'s): its
    trials in order, which search it is and why, and its best; without a search index (stores
    written before it existed), every trial result of that name."""
    from .search_records import which_search

    ref = which_search(s, name, key=key)
    if ref is None or ref.index is None:
        return _show_trial_results(s, name, manifests, ref)
    index = ref.index
    # In `show`, a finished trial is "complete": done/cached/resumed describe a run.
    rows = [{"search": name, **t, "source": "complete"} for t in index["trials"]]
    _print_trials(rows, title=f"search {name}: {len(rows)} of {index['n_trials']} trials "
                              f"({index['sampler']}, seed {index['seed']}, {index['direction']})")  # fmt: skip
    out.print(ref.describe(), soft_wrap=True, highlight=False)
    _print_best(s.manifest(f"{name}.best", ref.key))
    if len(manifests) > len(rows):
        out.print(f"the store holds {len(manifests)} trial results of searches named {name!r} (earlier ones included)")
    return None


def _show_trial_results(s: Any, name: str, manifests: list[Any], ref: Any) -> None:
    from .search_records import trial_facts

    rows = []
    for m in sorted(manifests, key=lambda m: m.created):
        facts = trial_facts(s, m)  # the small JSON record only, not the model
        if facts is not None:
            rows.append({"search": name, "trial": len(rows), "params": facts.params, "value": facts.value,
                         "state": facts.state, "source": "complete", "reason": facts.reason})  # fmt: skip
    _print_trials(rows, title=f"trials of search {name} ({len(rows)} in the store)")
    if ref is not None:
        out.print(ref.describe(), soft_wrap=True, highlight=False)
    _print_best(s.latest(f"{name}.best") if ref is None else s.manifest(f"{name}.best", ref.key))


def _print_best(best: Any) -> None:
    if best is not None:
        out.print(
            f"best: {best.extra.get('params')} value {best.extra.get('value')!r} (trial {best.extra.get('trial')})",
            soft_wrap=True,
        )


@app.command("verify")
@_errors
def verify(
    store: Optional[str] = typer.Option(None, help="Store URL or path."),
    repair: bool = typer.Option(False, "--repair", help="Restore what is corrupt or missing from the mirrors."),
) -> None:
    """Re-hash every object every manifest references; quarantine corrupt ones."""
    s = _store(store)
    report = s.verify()
    fields = ("manifests", "ok", "corrupt", "missing", "quarantined", "bad_manifests", "orphans", "temp_files")
    table = Table(*(f.replace("_", " ") for f in fields))
    table.add_row(*(str(getattr(report, f)) for f in fields))
    out.print(table)
    for problem in report.problems:  # each by name, with the results that use it
        out.print(escape(str(problem)), highlight=False)
    if report.unverified:
        out.print(f"{report.unverified} manifests of format 1 (no checksum): kept, not served; their stages recompute")
    if report.unsigned:
        what = f"not signed with key id {s.key_id}" if s.key_id else "signed, and no signing key is set"
        out.print(f"{report.unsigned} manifests {what}: kept, not served; their stages recompute")
    if repair:
        from .cli_mirror import print_repair

        print_repair(s, report.problems)
    elif not report.clean:
        raise typer.Exit(1)


def _params(params_file: Optional[str], sets: list[str], settings: Settings) -> dict[str, Any] | None:
    """The flow's parameters: a parameter file (the project's params.toml for the bundled
    flow) with ``--set`` overrides; for another flow without a file, just the overrides."""
    from .params import apply_overrides, load_params

    path = params_file or settings.params
    if settings.flow == DEFAULT_FLOW:  # checked against the bundled flow's schema, then its data
        from flows.ml_pipeline import DEFAULT_PARAMS, PARAMS_SCHEMA, check_params

        params = load_params(path or DEFAULT_PARAMS, sets, PARAMS_SCHEMA)
        check_params(params)
        return params
    if path:
        return load_params(path, sets)
    return apply_overrides({}, sets) if sets else None


RUNNER_OPTION = typer.Option(
    None,
    "--runner",
    help="threads (default) or dask: submitted stages and search trials on a dask.distributed cluster.",
)
DASK_ADDRESS_OPTION = typer.Option(
    None,
    "--dask-address",
    help="With --runner dask: the scheduler, tcp://host:8786 (default: a LocalCluster of 2 worker processes).",
)


@app.command("run")
@_errors
def run(
    flow: Optional[str] = typer.Option(None, "--flow", help="Flow to run, module:function."),
    sets: list[str] = typer.Option([], "--set", help="Override a parameter: section.key=value."),
    params: Optional[str] = typer.Option(None, "--params", help="Parameter file (TOML)."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
    force: list[str] = typer.Option([], "--force", help="Recompute this stage and its dependants ('*': all)."),
    no_lease: bool = typer.Option(False, "--no-lease", help="Compute missing stages without leasing their keys."),
    runner: Optional[str] = RUNNER_OPTION,
    dask_address: Optional[str] = DASK_ADDRESS_OPTION,
) -> None:
    """Run the flow: cached stages are served from the store, the rest run and commit."""
    from .integrations.server import ensure_server

    runner = "dask" if dask_address and runner is None else runner  # an address means Dask
    settings = Settings.load(
        store=store, flow=flow, lease=False if no_lease else None, runner=runner, dask_address=dask_address
    )
    if not _state["debug"]:  # a PipelineError a task or the flow ends with is its one line, no traceback
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).addFilter(_no_pipeline_traceback)
    server_ready = ensure_server(settings.server, err)  # before Prefect is imported: it reads the URL then
    from .integrations.runner import load_flow, run_flow

    load_flow(settings.flow)  # a bad flow or bad parameters: one line, before any server starts
    flow_params = _params(params, sets, settings)

    server_ready()
    from .integrations.liveness import sweep
    from .training.progress import rich_progress

    crashed = sweep(err)  # flow runs of killed CLI runs: Crashed, not Running for ever

    run_store = _open(settings)
    from .runs import record_crashed

    record_crashed(run_store, crashed)  # and in their run records (retention's FailedRuns)
    with rich_progress(out):  # a live bar per training stage, epoch by epoch
        report = run_flow(settings.flow, flow_params, run_store, force=force, lease=settings.lease,
                          runner=settings.runner, dask_address=settings.dask_address or None)  # fmt: skip
    _print_run(report.summary, run_store)


_SMALL = 256 * 1024


def _cached_trials(store: Any, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The trial tables of searches served whole from the store in this run: a hit stage
    whose (small) output holds ``trials`` rows, as ``tune()`` results' ``table()`` gives."""
    from .store.tree import DictNode, Leaf

    rows: list[dict[str, Any]] = []
    for e in summary["stages"]:
        if not e["hit"] or e["bytes"] > _SMALL:
            continue
        m = store.manifest(e["stage"], e["key"])
        # Only a JSON result or its "trials" entry is read: never a model unpickled (and its library imported).
        whole = m is not None and isinstance(m.outputs, Leaf) and m.outputs.codec == "json"
        if m is None or not (whole or isinstance(m.outputs, DictNode) and "trials" in m.outputs):
            continue
        try:
            value = store.load(m.outputs if whole else m.outputs["trials"])
        except PipelineError:
            continue
        if not whole:
            value = {"trials": value}
        trials = value.get("trials") if isinstance(value, dict) else None
        if isinstance(trials, list) and all(isinstance(t, dict) and "trial" in t for t in trials):
            fixed = ("trial", "value", "state", "source")
            rows += [{"search": e["stage"], "trial": t["trial"], "value": t.get("value"), "state": t.get("state"),
                      "source": "cached", "params": {k: v for k, v in t.items() if k not in fixed}}
                     for t in trials]  # fmt: skip
    return rows


def _print_run(summary: dict[str, Any], store: Any = None) -> None:
    table = Table("stage", "key", "result", "seconds", "bytes", "saved s", title=f"run {summary['run_id']}")
    for e in summary["stages"]:
        saved = max(0.0, e["compute_seconds"] - e["seconds"])
        table.add_row(
            e["stage"],
            e["key"][5:13] if out.is_terminal else e["key"],  # full keys into files and pipes
            "[green]hit[/green]" if e["hit"] else "[yellow]miss[/yellow]",
            f"{e['seconds']:.2f}",
            size(e["bytes"]),
            f"{saved:.2f}" if e["hit"] else "",
        )
    out.print(table)
    if summary.get("trials"):
        _print_trials(summary["trials"], title="trials")
    elif store is not None and (cached := _cached_trials(store, summary)):
        _print_trials(cached, title="trials (the search was served from the store)")
    out.print(
        f"{summary['hits']} cached, {summary['misses']} computed, "
        f"{summary['seconds_saved']:.2f} s saved, {summary['wall_seconds']:.1f} s wall, status {summary['status']}"
    )


def _print_trials(trials: list[dict[str, Any]], title: str) -> None:
    names = sorted({k for t in trials for k in t["params"]})
    table = Table("search", "trial", *names, "value", "state", title=title)
    for t in trials:
        state = t["state"] if t["state"] != "complete" else t["source"]
        table.add_row(
            t["search"],
            str(t["trial"]),
            *(_fmt(t["params"].get(n)) for n in names),
            "" if t["value"] is None else f"{t['value']:.5g}",
            state,
        )
    out.print(table)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command("status")
@_errors
def status(
    flow: Optional[str] = typer.Option(None, "--flow", help="Flow, module:function."),
    sets: list[str] = typer.Option([], "--set", help="Override a parameter: section.key=value."),
    params: Optional[str] = typer.Option(None, "--params", help="Parameter file (TOML)."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
) -> None:
    """Each stage of the flow as cached or stale, with the reasons, without running anything."""
    settings = Settings.load(store=store, flow=flow)
    from .integrations.runner import load_flow, plan_flow

    load_flow(settings.flow)  # a bad flow or bad parameters are said before a missing store
    flow_params = _params(params, sets, settings)
    statuses = plan_flow(settings.flow, flow_params, _open_for_plan(settings))
    table = Table("stage", "status", "why", "compute s")
    colour = {"cached": "green", "stale": "yellow", "may rerun": "cyan"}
    for st in statuses:
        table.add_row(st.stage, f"[{colour[st.state]}]{st.state}[/]", "; ".join(st.reasons), f"{st.seconds:.2f}")
    out.print(table)


server_app = typer.Typer(help="The local Prefect server CLI runs reuse.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("start")
@_errors
def server_start() -> None:
    """Start (or find) the local background Prefect server."""
    from .integrations.server import ensure_server

    api = ensure_server("auto", err)()
    out.print(f"Prefect API: {api}; UI: {api.removesuffix('/api') if api else 'none (ephemeral)'}")


@server_app.command("stop")
@_errors
def server_stop() -> None:
    """Stop the local background Prefect server."""
    from .integrations.server import stop_local_server

    stopped = stop_local_server()
    out.print(f"stopped {stopped.api_url}" if stopped else "no local server was running")


@server_app.command("status")
@_errors
def server_status() -> None:
    """Say which Prefect API CLI runs would use; mark flow runs of killed CLI runs Crashed."""
    import os

    from .integrations.liveness import sweep
    from .integrations.server import LocalServer, healthy

    if os.environ.get("PREFECT_API_URL"):
        out.print(f"PREFECT_API_URL={os.environ['PREFECT_API_URL']}")
        sweep(out)  # flow runs of killed CLI runs: Crashed
        return
    server = LocalServer.read()
    if server and healthy(server.api_url):
        out.print(f"local server running at {server.api_url} (pid {server.pid}, log {server.log}); "
                  f"UI at {server.api_url.removesuffix('/api')}")  # fmt: skip
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported (by the sweep)
        sweep(out)
    else:
        out.print("no local server running; the next `run` starts one")


def main() -> None:
    try:
        app()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    _exit(code)


def _exit(code: Any) -> None:
    """End the process as the interpreter does, minus its teardown: non-daemon threads are
    joined and atexit handlers run (Prefect's log and event flushes, the checkpoint writers',
    the mirror replicator's, ``weakref.finalize``), the standard streams flushed; then the
    process exits without destroying every module and collecting the heap one object at a
    time, which cost a fifth of the CPU of importing Prefect, pandas and sklearn."""
    import atexit
    import os
    import threading

    if code is None:
        code = 0
    elif not isinstance(code, int):  # as the interpreter does with sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


# Register ls, report, runs, history, diff, gc, tag, serve, mirror; extend show.
from . import cli_history, cli_lifecycle, cli_ls, cli_mirror, cli_serve  # noqa: E402,F401
