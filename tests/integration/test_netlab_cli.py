"""`lispmesh lab ...` end to end, as a user runs it (root needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netlab import parse_file
from netlab.testing import leftovers, unique_name

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]


def lab_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "lispmesh.cli", "lab", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if check:
        assert res.returncode == 0, f"lab {' '.join(args)}: {res.stdout}{res.stderr}"
    return res


@pytest.fixture
def topo_file(tmp_path: Path) -> Path:
    """The two-node example with a stand-in process instead of the lispmesh processes (the CLI
    is under test here, not the mesh: tests/integration/test_netlab_examples.py runs it real)."""
    data = yaml.safe_load((ROOT / "examples" / "two-node.clab.yml").read_text())
    for node in ("n1", "n2", "ctrl"):
        data["topology"]["nodes"][node]["cmd"] = "sleep 3600"
    path = tmp_path / "two.clab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_cli_deploy_inspect_exec_graph_tools_destroy(topo_file: Path, tmp_path: Path) -> None:
    name = unique_name("cli")
    topo = parse_file(topo_file, name=name)
    try:
        out = lab_cli("deploy", "-t", str(topo_file), "--name", name, "--max-workers", "2")
        assert f"clab-{name}-n1" in out.stdout and "running" in out.stdout
        again = lab_cli("deploy", "-t", str(topo_file), "--name", name)
        assert "nothing changed" in again.stderr

        data = json.loads(lab_cli("inspect", "--name", name, "--format", "json").stdout)
        rows = data["containers"]
        assert [r["name"] for r in rows] == [
            f"clab-{name}-{node}" for node in ("n1", "n2", "ctrl", "underlay")
        ]
        assert {r["state"] for r in rows} == {"running"}
        assert rows[0]["ipv4_address"] == "172.20.20.2/24"
        every = json.loads(lab_cli("inspect", "--all", "--format", "json").stdout)["containers"]
        assert {r["name"] for r in rows} <= {r["name"] for r in every}

        res = lab_cli(
            "exec",
            "-t",
            str(topo_file),
            "--name",
            name,
            "--label",
            "clab-node-name=n1",
            "--cmd",
            "ping -c 1 -W 2 10.0.12.2",
            "--format",
            "json",
        )
        result = json.loads(res.stdout)
        assert list(result) == [f"clab-{name}-n1"]
        assert result[f"clab-{name}-n1"][0]["return-code"] == 0

        dot = lab_cli("graph", "-t", str(topo_file), "--name", name, "--dot").stdout
        if shutil.which("dot"):
            svg = subprocess.run(
                ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=30, check=True
            )
            assert "<svg" in svg.stdout
            html = tmp_path / "lab.html"
            lab_cli("graph", "-t", str(topo_file), "--name", name, "--html", str(html))
            assert "<svg" in html.read_text()

        lab_cli(
            "tools",
            "link",
            "set",
            "-t",
            str(topo_file),
            "--name",
            name,
            "-e",
            "n1:eth1",
            "--rate",
            "5mbit",
        )
        links = json.loads(
            lab_cli(
                "tools", "link", "show", "-t", str(topo_file), "--name", name, "--format", "json"
            ).stdout
        )["links"]
        n1 = next(r for r in links if r["endpoint"] == "n1:eth1")
        assert n1["qdisc"] == "tbf" and n1["rate"] == "5Mbit" and n1["state"] == "up"
        netem = lab_cli(
            "tools",
            "netem",
            "set",
            "-n",
            f"clab-{name}-n2",
            "-i",
            "eth1",
            "--delay",
            "10ms",
            check=False,
        )
        if netem.returncode != 0:  # kernels without sch_netem: one clear line, exit 1
            assert netem.returncode == 1
            assert netem.stderr.strip().splitlines() == [
                "lispmesh: error: this kernel has no tc netem qdisc (sch_netem): delay, jitter "
                "and loss cannot be emulated here; --rate (tbf) and --state still work"
            ]

        bad = lab_cli("exec", "-t", str(topo_file), "--name", name, "--cmd", "false", check=False)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
    finally:
        lab_cli("destroy", "-t", str(topo_file), "--name", name, "--cleanup", check=False)
    assert leftovers(topo) == []
    assert not (tmp_path / f"clab-{name}").exists()
    gone = lab_cli("destroy", "-t", str(topo_file), "--name", name)
    assert "nothing to destroy" in gone.stderr
