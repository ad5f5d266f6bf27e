"""`lispmesh app deploy --dry-run` (issue 14 item 5): the plan and its explanation for people and
for scripts, exit 1 when a replica cannot be placed, and a bad spec or nodes file refused with
one line naming file:line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller_api.apps import AppSpecError
from controller_api.placement.nodes_file import parse_nodes
from lispmesh import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APP, NODES = str(EXAMPLES / "app.yml"), str(EXAMPLES / "nodes.yml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_the_plan_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "app", "deploy", "--dry-run", APP, "--nodes", NODES)
    assert code == 0
    assert out.startswith("sensor-hub: 3 to place, 0 to stop, 0 kept, 0 not placed; 6 nodes: ")
    assert "1 draining" in out and "1 disconnected" in out
    assert "1 filtered by label site=factory" in out


def test_dry_run_json_names_nodes_scores_and_filters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "app", "deploy", "--dry-run", APP, "--nodes", NODES, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["app"] == "sensor-hub" and doc["failures"] == []
    nodes = [p["node"] for p in doc["placements"]]
    assert len(set(nodes)) == 3 and set(nodes) <= {"n1", "n2", "n4"}  # distinct, factory, online
    assert doc["filtered"] == {"draining": 1, "disconnected": 1,
                               "filtered by label site=factory": 1}  # fmt: skip
    assert all("binpack" in p["parts"] for p in doc["placements"])


def test_a_replica_that_cannot_be_placed_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.yml"
    nodes.write_text("nodes:\n  - {name: n1, labels: {site: factory}}\n  - {name: n2}\n")
    code, out, _ = run(capsys, "app", "deploy", "--dry-run", APP, "--nodes", str(nodes))
    assert code == 1
    assert (
        "replicas 1, 2 not placed: no node fits (2 nodes: 1 filtered by label site=factory, "
        "1 already run a replica (distinct_hosts))"
    ) in out


def test_a_bad_spec_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "app.yml"
    bad.write_text(Path(APP).read_text().replace("memory: 512Mi", "memory: lots"))
    code, out, err = run(capsys, "app", "deploy", "--dry-run", str(bad), "--nodes", NODES)
    assert code == 1 and out == ""
    assert err == f"lispmesh: error: {bad}:12: spec.resources.memory: 'lots' is not a size " \
                  "(e.g. 64Mi, 1Gi, 500M)\n"  # fmt: skip


def test_deploy_without_dry_run_or_nodes_says_what_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Without --dry-run it asks the controller: here none, and no admin certificate either.
    code, _, err = run(capsys, "app", "deploy", APP, "--state-dir", str(tmp_path))
    assert code == 1 and "admin" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "app", "deploy", "--dry-run", APP)
    assert code == 1 and "--nodes NODES.yml" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]\n", "nodes.yml:1: expected a mapping, got a list"),
        ("nodes: {}\n", "nodes.yml:1: nodes: expected a list, got a mapping"),
        ("nodes:\n  - {memory: 1Gi}\n", "nodes.yml:2: nodes[0].name: is required"),
        ("nodes:\n  - {name: a}\n  - {name: a}\n", "nodes.yml:3: nodes[1].name: node 'a' is"),
        ("nodes:\n  - {name: a, memory: 1GB}\n", "nodes.yml:2: nodes[0].memory: '1GB' is not"),
        ("nodes:\n  - {name: a, cpu: x}\n", "nodes.yml:2: nodes[0].cpu: 'x' is not a CPU"),
        ("nodes:\n  - {name: a, kinds: [pod]}\n", "nodes[0].kinds[0]: 'pod' is not container"),
        ("nodes:\n  - {name: a, health: ok}\n", "nodes[0].health: 'ok' is not online or"),
        ("nodes:\n  - {name: a, gpu: 1}\n", "nodes.yml:2: nodes[0].gpu: unknown field"),
        ("nodes:\n  - {name: a, draining: 1}\n", "nodes[0].draining: expected true or false"),
    ],
)
def test_a_bad_nodes_file_is_one_line(text: str, message: str) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_nodes(text, "nodes.yml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_nodes_file_values() -> None:
    (node,) = parse_nodes(
        "nodes:\n  - {name: a, memory: 1Gi, cpu: 500m, labels: {site: x}, kinds: [vm],"
        " hypervisors: [kvm], health: lost, draining: true}\n"
    )
    assert (node.capacity.memory, node.capacity.millicpu) == (1 << 30, 500)
    assert node.labels == {"site": "x"} and node.kinds == {"vm"} and node.hypervisors == {"kvm"}
    assert (node.health, node.draining) == ("lost", True)
