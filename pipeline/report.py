"""One self-contained HTML page about a run (the ``[report]`` extra: matplotlib).

``python -m pipeline report [--out DIR] [RUN]`` or ``write_report(store, "reports")``:

- the run: status, hits and misses, seconds saved; a timeline of its stages (hit/miss,
  seconds, time saved) and the same as a table;
- each training stage: its curves per epoch (surviving checkpoints, the best epoch and the
  early stop marked) and a table of its checkpoints with sizes;
- each search: the objective per trial in order with the best-so-far line, the objective
  against each parameter, and the trial table.

Plots are PNGs embedded as ``data:`` URIs: the page needs no other file and no network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError
from .history import RunRecord, find_run, training_of
from .runs import trial_events
from .search_records import search_index
from .store import Store
from .store.layout import component as safe_name
from .tracking import TrainingResult
from .units import size

HIT, MISS, BEST = "#2e7d32", "#ef6c00", "#c62828"


def write_report(store: Store, out: str | os.PathLike = "reports", run: str | None = None) -> Path:
    """Write the report of run ``run`` (default: the newest) to ``out/``; returns its path."""
    record = find_run(store, run)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report-{safe_name(record.run_id)}.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(store, record), encoding="utf-8")
    os.replace(tmp, path)
    return path


def render(store: Store, run: RunRecord) -> str:
    """The HTML page of ``run``."""
    _require_matplotlib()
    parts = [_header(run), _timeline(run)]
    training = training_of(store, run)
    parts.append("<h2>Training</h2>")
    parts += [_training(t) for t in training] or ["<p>No training stage of this run has checkpoints.</p>"]
    searches = _searches(store, run)
    parts.append("<h2>Search</h2>")
    parts += [_search(*found) for found in searches] or ["<p>No search in this run.</p>"]
    body = "\n".join(parts)
    return _PAGE.format(title=html.escape(f"pipeline run {run.run_id}"), body=body)


# -- sections ----------------------------------------------------------------------------------
def _header(run: RunRecord) -> str:
    started = dt.datetime.fromtimestamp(run.started, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if run.stages else "–"
    facts = [
        ("run", run.run_id),
        ("status", run.status),
        ("started", started),
        ("wall seconds", f"{run.wall_seconds:.2f}"),
        ("stages hit", str(run.hits)),
        ("stages computed", str(run.misses)),
        ("seconds saved", f"{run.seconds_saved:.2f}"),
    ]
    rows = "".join(f'<tr><th>{html.escape(k)}</th><td id="run-{_slug(k)}">{html.escape(v)}</td></tr>' for k, v in facts)
    return f"<h1>Run {html.escape(run.run_id[:12])}</h1>\n<table class='facts'>{rows}</table>"


def _timeline(run: RunRecord) -> str:
    if not run.stages:
        return "<h2>Timeline</h2><p>No stage calls recorded.</p>"
    fig, ax = _figure(8, 0.45 * len(run.stages) + 1.2)
    t0 = run.started
    for i, s in enumerate(run.stages):
        colour = HIT if s.hit else MISS
        ax.barh(i, max(s.seconds, 1e-3), left=s.started - t0, color=colour, height=0.6)
        label = f"{s.seconds:.2f} s" + (f" (saved {s.saved:.2f} s)" if s.hit else "")
        ax.text(s.started - t0 + s.seconds, i, " " + label, va="center", fontsize=8)
    ax.set_yticks(range(len(run.stages)), [s.stage for s in run.stages], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.set_title("stages: green = hit (served from the store), orange = computed", fontsize=9)
    rows = [
        [
            s.stage,
            _short(s.key),
            "hit" if s.hit else "miss",
            f"{s.seconds:.3f}",
            f"{s.compute_seconds:.3f}",
            f"{s.saved:.3f}" if s.hit else "",
            size(s.bytes),
        ]
        for s in run.stages
    ]
    table = _table(["stage", "key", "result", "seconds", "compute seconds", "saved seconds", "bytes"], rows, "stages")
    return f"<h2>Timeline</h2>\n{_img(fig, 'timeline of the stages')}\n{table}"


def _training(t: TrainingResult) -> str:
    run = t.run
    names = list(dict.fromkeys(k for h in t.history for k in h if k != "epoch"))
    losses = [n for n in names if "loss" in n] or names[:1]
    others = [n for n in names if n not in losses]
    fig, axes = _figure(8, 3.2, ncols=2 if others else 1)
    axes = list(axes) if others else [axes]
    epochs = [int(h["epoch"]) for h in t.history]
    kept = {c.step for c in t.checkpoints}
    for ax, group in zip(axes, [losses, others]):
        for n in group:
            ys = [h.get(n, math.nan) for h in t.history]
            (line,) = ax.plot(epochs, ys, label=n, linewidth=1.5)
            marks = [(e, y) for e, y in zip(epochs, ys) if e in kept]
            if marks:
                ax.scatter(*zip(*marks), color=line.get_color(), edgecolor="black", zorder=3, s=28)
        if t.best_step is not None:
            ax.axvline(t.best_step, color=BEST, linestyle=":", label=f"best epoch {t.best_step}")
        if t.stopped:
            ax.axvline(t.epochs, color="black", linestyle="--", label=f"early stop at {t.epochs}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0].set_title("circles: checkpoints kept in the store", fontsize=9)
    rows = [
        [
            str(c.step),
            ("best" if c.step == t.best_step else ""),
            ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items()),
            size(c.bytes),
            str(c.bytes),
            c.created[:19],
            c.uri,
        ]
        for c in t.checkpoints
    ]
    table = _table(["step", "best", "metrics", "size", "bytes", "created", "URI"], rows, "checkpoints")
    hp = ", ".join(f"{k}={v!r}" for k, v in t.hyperparameters.items())
    epochs_text = f"{t.epochs} epochs" + (" (stopped early)" if t.stopped else "")
    return (
        f"<section class='training' data-stage='{html.escape(run.stage)}' data-key='{html.escape(run.key)}'>"
        f"<h3>{html.escape(run.stage)} <small>{html.escape(_short(run.key))}</small></h3>"
        f"<p>{html.escape(epochs_text)}; hyperparameters: {html.escape(hp or '–')}</p>"
        f"{_img(fig, f'training curves of {run.stage}')}\n{table}</section>"
    )


def _searches(store: Store, run: RunRecord) -> list[tuple[str, list[dict[str, Any]], dict[str, Any], str]]:
    """``(name, trials, facts, source)`` of each search of this run: the trials it recorded;
    for a search it was served from the store, the trials of the run that computed it (the
    ``run_id`` of the served result's manifest)."""
    found: dict[str, tuple[list[dict[str, Any]], str]] = {}
    for name, trials in _by_search(run.trials).items():
        found[name] = (trials, run.run_id)
    computing = []
    for s in run.stages:
        m = store.manifest(s.stage, s.key) if s.hit else None
        if m is not None and m.run_id and m.run_id != run.run_id and m.run_id not in computing:
            computing.append(m.run_id)
    for rid in computing:
        for name, trials in _by_search(trial_events(store, rid)).items():
            found.setdefault(name, (trials, rid))
    out = []
    for name, (trials, rid) in found.items():
        index = search_index(store, name) or {}
        facts = {k: index[k] for k in ("direction", "sampler", "n_trials") if k in index}
        out.append((name, trials, facts, rid))
    return out


def _by_search(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Trial events by search name, one per trial number (the last recorded), in trial order."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for e in events:
        if "search" in e and "trial" in e:
            out.setdefault(str(e["search"]), {})[int(e["trial"])] = e
    return {name: [trials[n] for n in sorted(trials)] for name, trials in out.items()}


def _search(name: str, trials: list[dict[str, Any]], facts: dict[str, Any], source: str) -> str:
    done = [t for t in trials if t.get("value") is not None and t.get("state") == "complete"]
    maximise = facts.get("direction") == "maximize"
    params = sorted({k for t in trials for k in t["params"]})
    fig, axes = _figure(8, 3.0, ncols=1 + len(params), width_per=3.0)
    axes = list(axes) if params else [axes]
    ax = axes[0]
    if done:
        xs, ys = [t["trial"] for t in done], [t["value"] for t in done]
        ax.scatter(xs, ys, color="#1565c0", s=20, label="trial")
        best, line = None, []
        for y in ys:
            best = y if best is None or (y > best if maximise else y < best) else best
            line.append(best)
        ax.step(xs, line, where="post", color=BEST, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(fontsize=7)
    for ax, p in zip(axes[1:], params):
        values = [t["params"].get(p) for t in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
            ax.scatter(values, [t["value"] for t in done], s=20, color="#1565c0")
            if min(values) > 0 and max(values) / min(values) > 100:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in values})
            ax.scatter([cats.index(str(v)) for v in values], [t["value"] for t in done], s=20, color="#1565c0")
            ax.set_xticks(range(len(cats)), cats, fontsize=7, rotation=20)
        ax.set_xlabel(p)
    rows = [
        [str(t["trial"]), *(_fmt(t["params"].get(p)) for p in params), _fmt(t.get("value")), str(t.get("state", ""))]
        for t in trials
    ]
    table = _table(["trial", *params, "value", "state"], rows, "trials")
    direction = "maximise" if maximise else "minimise"
    text = f"{len(trials)} of {facts.get('n_trials', len(trials))} trials, {facts.get('sampler', '?')}, {direction}"
    text += f"; trials as run {source} recorded them"
    return (
        f"<section class='search' data-search='{html.escape(name)}' data-run='{html.escape(source)}'>"
        f"<h3>{html.escape(name)}</h3><p>{html.escape(text)}</p>{_img(fig, f'search {name}')}\n{table}</section>"
    )


# -- helpers -----------------------------------------------------------------------------------
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("the report needs the [report] extra (matplotlib): pip install 'pipeline[report]'") from None


def _figure(width: float, height: float, ncols: int = 1, width_per: float | None = None) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread

    fig = Figure(figsize=(width_per * ncols if width_per else width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(head: Iterable[str], rows: list[list[str]], cls: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def _short(key: str) -> str:
    return key.partition(":")[2][:12] or key[:12]


def _slug(text: str) -> str:
    return "-".join(text.lower().split())


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 12px; }}
th, td {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
thead th {{ background: #f3f3f3; }}
table.facts th {{ background: #f3f3f3; }}
img {{ max-width: 100%; display: block; }}
section {{ border-top: 1px solid #eee; margin-top: 1em; }}
small {{ color: #777; font-weight: normal; }}
</style></head>
<body>
{body}
</body></html>
"""

__all__ = ["write_report", "render"]
