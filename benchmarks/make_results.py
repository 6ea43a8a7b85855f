"""Fold the per-benchmark result files (``benchmarks/_*.md``, each written by its script with
``--markdown``) into ``benchmarks/RESULTS.md`` under the summary kept in ``_summary.md``.

    python benchmarks/make_results.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["_fingerprint_results.md", "_fingerprint_interleaved.md", "_store_results.md", "_pipeline_results.md",
         "_cli_results.md", "_server_ui_results.md", "_training_results.md", "_tuning_overhead_results.md",
         "_tuning_results.md", "_distributed_results.md", "_lazy_results.md", "_retention_results.md",
         "_mirror_results.md", "_safe_formats_results.md", "_store_scale_results.md",
         "_store_scale_s3_results.md", "_store_ops_results.md", "_ls_memory_results.md",
         "_scale_results.md",
         "_store_writes_results.md"]  # fmt: skip


def demote(text: str) -> str:
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def main() -> None:
    parts = [(HERE / "_summary.md").read_text().rstrip()]
    for name in ORDER:
        path = HERE / name
        if path.exists():
            parts.append(demote(path.read_text().rstrip()))
    (HERE / "RESULTS.md").write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
