"""Run one benchmark in an older tree and in this one, in one run, and print them side by side.

Used by `overlay_bench.py --against REV` (issue 11: the restructure must show no regression beyond
noise, compared in the same run). The older tree is `git archive REV` unpacked in a temporary
directory (nothing in the repository's .git changes), its C data path compiled there; each tree's
benchmark runs from its own directory with PYTHONPATH on it, so each imports only its own code.
The trees alternate (old, new, new, old, ...) so a machine that gets busier during the run does
not favour one of them; the table shows each tree's median and the new/old ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (JSON field of a row, column label, True when more is better)
METRICS = (
    ("gbps", "Gbit/s", True),
    ("gbps_per_core_received", "Gbit/s per core recv'd", True),
    ("gbit_per_daemon_cpu_s", "Gbit/s per CPU-s", True),
    ("daemon_cpu_s", "daemon CPU s", False),
    ("retransmits", "retransmits", False),
    ("rtt_avg_ms", "RTT avg ms", False),
    ("rss_mb", "RSS MB", False),
    ("steal_pct", "steal %", False),
    ("other_cpu_pct", "other CPU %", False),
)


def unpack(root: Path, rev: str, into: Path) -> str:
    """`rev`'s tree under `into` (its C data path built); returns the commit's short id."""
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    source = into / "mesh" / "_fastpath.c"
    if source.exists():
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        include = sysconfig.get_paths()["include"]
        subprocess.run(
            ["gcc", "-O2", "-shared", "-fPIC", f"-I{include}", str(source), "-lcrypto",
             "-o", str(into / "mesh" / f"_fastpath{suffix}")],
            check=True, capture_output=True,
        )  # fmt: skip
    return commit


def run_once(tree: Path, script: str, args: Sequence[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, script, *args, "--json"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{script} in {tree} exited {out.returncode}: {tail}")
    return dict(json.loads(out.stdout))


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def compare(root: Path, rev: str, script: str, args: Sequence[str], rounds: int) -> int:
    """Run `script args` in `rev`'s tree and in `root`, `rounds` times each; print the table."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-old-tree-"))
    try:
        old_id = unpack(root, rev, workdir)
        trees = {f"old {old_id}": workdir, "new (this tree)": root}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        order = list(trees)
        for i in range(rounds):
            for name in order if i % 2 == 0 else reversed(order):
                print(f"round {i + 1}/{rounds}: {name} ...", file=sys.stderr)
                runs[name].append(run_once(trees[name], script, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_side_by_side(runs)
    return 0


def print_side_by_side(runs: dict[str, list[dict[str, Any]]]) -> None:
    names = list(runs)
    rows_by_tree = {
        name: {r["path"]: r for doc in docs for r in doc["rows"] if r["status"] == "ok"}
        for name, docs in runs.items()
    }
    paths = sorted({p for rows in rows_by_tree.values() for p in rows})
    for path in paths:
        print(f"\n{path}: median of {len(runs[names[0]])} run(s) per tree, alternating")
        header = f"{'':24}" + "".join(f"{n:>18}" for n in names) + f"{'new / old':>12}"
        header += f"{'range per tree (old / new)':>34}"
        print(header)
        for field, label, _more_is_better in METRICS:
            values, spread = [], []
            for name in names:
                per_run = [
                    r.get(field)
                    for doc in runs[name]
                    for r in doc["rows"]
                    if r["path"] == path and r["status"] == "ok"
                ]
                values.append(_median(per_run))
                present = [v for v in per_run if v is not None]
                spread.append(f"{min(present):.3g}-{max(present):.3g}" if present else "-")
            cells = "".join(f"{'-' if v is None else f'{v:.3g}':>18}" for v in values)
            spreads = " / ".join(spread)
            old, new = values[0], values[-1]
            ratio = f"{new / old:.2f}" if old and new is not None else "-"
            print(f"{label:24}{cells}{ratio:>12}{spreads:>34}")
