"""The HTML report of real runs of the bundled flow, rendered in headless Chromium: every image
loads, and the numbers on the page are the store's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import Store
from pipeline.report import write_report
from pipeline.units import size

pytest.importorskip("matplotlib")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_api):
    from tests.bundled_runs import bundled_runs

    return bundled_runs(tmp_path_factory)


class Browser:
    """Headless Chromium driven over the DevTools protocol (websockets ships with Prefect)."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1200,3000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.poll() is None and time.time() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._id = 0

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("method") == "Page.loadEventFired":
                return

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


READ_PAGE = """(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const table = t => [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent));
  return {
    images: imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
    facts: Object.fromEntries([...document.querySelectorAll('table.facts td')].map(td => [td.id, td.textContent])),
    stages: table(document.querySelector('table.stages')),
    training: [...document.querySelectorAll('section.training')].map(s => ({
      stage: s.dataset.stage, key: s.dataset.key, text: s.querySelector('p').textContent,
      checkpoints: table(s.querySelector('table.checkpoints'))})),
    searches: [...document.querySelectorAll('section.search')].map(s => ({
      name: s.dataset.search, head: [...s.querySelectorAll('thead th')].map(th => th.textContent),
      trials: table(s.querySelector('table.trials'))})),
  };
})()"""


def read_json(path: Path):
    return json.loads(path.read_text())


def carried_bytes(manifest) -> int:
    """The bytes of the pickled entries a checkpoint manifest carries (a small model rides there)."""
    return sum(int(d["bytes"]) for d in manifest.get("extra", {}).get("pickled", {}).values())


def leaf_bytes(tree) -> int:
    if "object" in tree:
        return tree["bytes"]
    return sum(leaf_bytes(t) for t in [*tree.get("tuple", []), *tree.get("dict", {}).values()])


@pytest.mark.slow
@needs_chromium
def test_the_report_of_a_run_in_a_real_browser(runs, tmp_path):
    root = Path(runs.store.url)
    path = write_report(runs.store, tmp_path / "out", runs.cold)
    assert path.parent == tmp_path / "out" and 'src="http' not in path.read_text()  # self-contained
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(path.as_uri())
        page = browser.evaluate(READ_PAGE)
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    (tmp_path / "report.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000

    # every plot decoded: one timeline, one per training stage, one per search
    assert len(page["images"]) == 1 + len(page["training"]) + len(page["searches"]) == 3
    assert all(i["complete"] and i["width"] > 300 and i["height"] > 100 for i in page["images"]), page["images"]

    summary = read_json(root / "runs" / f"{runs.cold}.json")
    assert page["facts"]["run-run"] == runs.cold and page["facts"]["run-status"] == summary["status"]
    assert page["facts"]["run-stages-hit"] == str(summary["hits"]) == "0"
    assert page["facts"]["run-stages-computed"] == str(summary["misses"])
    assert [(r[0], r[2], r[3]) for r in page["stages"]] == [
        (e["stage"], "hit" if e["hit"] else "miss", f"{e['seconds']:.3f}") for e in summary["stages"]
    ]

    # the training stage: its checkpoints as the store holds them, sizes included
    (train,) = page["training"]
    key = next(e["key"] for e in summary["stages"] if e["stage"] == "train")
    assert train["stage"] == "train" and train["key"] == key
    folder = root / "checkpoints" / "train" / key.partition(":")[2]
    manifests = sorted((read_json(p) for p in folder.glob("*.json")), key=lambda m: m["step"])
    assert [int(r[0]) for r in train["checkpoints"]] == [m["step"] for m in manifests] and manifests
    held = [leaf_bytes(m["outputs"]) + carried_bytes(m) for m in manifests]  # objects + entries in the manifest
    assert [int(r[4]) for r in train["checkpoints"]] == held
    assert [r[3] for r in train["checkpoints"]] == [size(b) for b in held]
    newest = manifests[-1]["extra"]
    best = newest["early_stopping"]["best_step"]
    assert [r[1] for r in train["checkpoints"]] == ["best" if m["step"] == best else "" for m in manifests]
    epochs = newest["history"][-1]["epoch"]
    assert train["text"].startswith(f"{epochs} epochs" + (" (stopped early)" if newest["early_stopping"]["stopped"]
                                                          else ""))  # fmt: skip

    # the search: every trial with its value, as the search's trials were recorded
    (search,) = page["searches"]
    assert search["name"] == "tune" and search["head"] == ["trial", "alpha", "eta0", "learning_rate", "value", "state"]
    trials = sorted(summary["trials"], key=lambda t: t["trial"])
    assert [(int(r[0]), float(r[4])) for r in search["trials"]] == [
        (t["trial"], pytest.approx(t["value"], rel=1e-4)) for t in trials
    ]


@pytest.mark.slow
def test_the_warm_run_shows_hits_and_time_saved(runs, tmp_path):
    path = write_report(runs.store, tmp_path, runs.warm)
    text = path.read_text()
    summary = read_json(Path(runs.store.url) / "runs" / f"{runs.warm}.json")
    assert summary["misses"] == 0 and f'<td id="run-stages-hit">{summary["hits"]}</td>' in text
    assert f'<td id="run-seconds-saved">{summary["seconds_saved"]:.2f}</td>' in text
    # its search was served from the store: the trials are those of the run that computed it
    assert f"<section class='search' data-search='tune' data-run='{runs.cold}'>" in text
    cold = read_json(Path(runs.store.url) / "runs" / f"{runs.cold}.json")["trials"]
    for t in cold:
        assert f"<td>{t['value']:.5g}</td>" in text


def test_no_run_and_an_unknown_run_are_clear_errors(tmp_path):
    from pipeline import PipelineError

    with pytest.raises(PipelineError, match="no runs recorded in .* yet"):
        write_report(Store(tmp_path / "empty"), tmp_path)
    with pytest.raises(PipelineError, match="no run 'nope' in"):
        write_report(Store(tmp_path / "empty"), tmp_path, "nope")


@pytest.mark.slow
def test_report_command(runs, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    args = ["report", "--store", runs.store.url, "--out", str(tmp_path), runs.changed_param[:8]]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    path = tmp_path / f"report-{runs.changed_param}.html"
    assert f"report: {path}" in done.output.replace("\n", "") and runs.changed_param in path.read_text()
    newest = CliRunner().invoke(app, ["report", "--store", runs.store.url, "--out", str(tmp_path)])
    assert newest.exit_code == 0 and runs.changed_helper in newest.output.replace("\n", "")  # the newest run
    missing = CliRunner().invoke(app, ["report", "--store", runs.store.url, "zzz"])
    assert missing.exit_code == 1 and "no run 'zzz' in" in missing.output
