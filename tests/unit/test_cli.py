"""The command line as one wing (no root): every group's help, the one-line errors and exit
codes, and the old spellings `node status` / `controller topology` printing exactly what
`status` / `topology` print, against a real control socket and a real controller on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from lispmesh import cli

GROUPS = ["demo", "lab", "node", "controller", "app", "policy"]
VERBS = ["status", "topology", "ping", "trace", "map-cache", "netcheck"]
NESTED = [["controller", "token"], ["controller", "node"], ["lab", "tools"],
          ["lab", "tools", "link"], ["lab", "tools", "netem"]]  # fmt: skip

STATUS = {
    "name": "n1", "roles": ["xtr"], "uptime": 7, "encryption": True,
    "authenticated_key_exchange": True,
    "agent": {"node_id": "id-1", "controller_address": "10.77.0.1:7444",
              "controller_state": "connected", "controller": "connected since 10:00",
              "applied_version": 3, "config_source": "controller", "apply_error": ""},
    "xtr": {"eid_prefixes": ["10.250.1.0/24", "fd00:1234:5678:1::/64"], "instance_id": 0,
            "uplinks": [{"interface": "eth1", "address": "10.77.0.11", "up": True,
                         "priority": 1, "weight": 100}],
            "map_servers": [{"address": "10.77.0.1", "registered": True, "registers_sent": 4,
                             "notifies": 4}],
            "peers": [{"name": "n2", "eids": ["10.250.2.0/24"], "path": "direct",
                       "rloc": "10.77.0.12", "local_rloc": "10.77.0.11", "rtt_ms": 0.7,
                       "last_key_exchange_ago": 2.0, "bytes_sent": 100, "packets_sent": 1,
                       "bytes_received": 50, "packets_received": 1}],
            "map_cache": [{"prefix": "10.250.2.0/24", "peer": "n2", "action": None,
                           "in_use": "10.77.0.12", "key_id": 1, "ttl_remaining": 800}],
            "drops": {"no-mapping": 2}, "errors": ["map-server 10.77.0.9 timed out"]},
}  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------ help and usage


@pytest.mark.parametrize("argv", [[], *([g] for g in GROUPS), *([v] for v in VERBS), *NESTED])
def test_every_group_and_verb_has_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lispmesh {' '.join(argv)}".rstrip())
    if not argv:
        for name in GROUPS + VERBS:
            assert re.search(rf"^\s+{name}\b", out, re.MULTILINE), name


@pytest.mark.parametrize("argv", [[], *([g] for g in GROUPS if g != "demo"), *NESTED])
def test_a_group_without_a_verb_prints_its_usage_and_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, _ = run(capsys, *argv)
    assert code == 2
    assert out.startswith("usage: lispmesh")


def test_a_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--no-such-flag"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# ------------------------------------------------------------------------ errors are one line


@pytest.mark.parametrize("spelling", [["status"], ["node", "status"], ["map-cache"]])
def test_a_missing_node_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], spelling: list[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, *spelling, "--socket", str(tmp_path / "none.sock"))
    assert (code, out) == (1, "")
    assert (
        err == f"lispmesh: error: no node is running (no control socket at {tmp_path}/none.sock)\n"
    )


@pytest.mark.parametrize("spelling", [["topology"], ["controller", "topology"]])
def test_a_missing_admin_certificate_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], spelling: list[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, *spelling, "--state-dir", str(tmp_path), "--json")
    assert (code, out) == (1, "")
    assert err.startswith(f"lispmesh: error: cannot read the controller CA {tmp_path}/ca.crt")
    assert err.count("\n") == 1


def test_layer_errors_reach_main_as_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A node config error (mesh), a state-dir error (node) and a bad policy (controller_api)
    are each printed once, by main, without a traceback."""
    code, _, err = run(capsys, "node", "run", "--config", str(tmp_path / "x.yml"))
    assert (
        code == 1
        and err == f"lispmesh: error: {tmp_path}/x.yml: cannot read: No such file or directory\n"
    )
    (tmp_path / "bad.yml").write_text("rules: 7\n")
    code, _, err = run(capsys, "policy", "check", "--offline", str(tmp_path / "bad.yml"))
    assert code == 1 and err.startswith("lispmesh: error: bad.yml") and err.count("\n") == 1
    code, _, err = run(capsys, "status", "--state-dir", str(tmp_path))
    assert code == 1 and err.startswith("lispmesh: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


# ------------------------------------------------------------------------ a real node socket


class Background:
    """An asyncio loop in a thread, for servers the CLI (synchronous) talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


@pytest.fixture
def node_socket(background: Background) -> Iterator[Path]:
    from mesh.control import ControlServer

    short = Path(tempfile.mkdtemp(prefix="lmcli-", dir="/tmp"))  # AF_UNIX paths are short
    path = short / "n1.sock"

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["command"] == "status":
            return STATUS
        if request["command"] == "map-cache":
            return {"map_cache": [{**STATUS["xtr"]["map_cache"][0], "rlocs": []}]}  # type: ignore[index]
        return {"error": f"unknown command {request['command']}"}

    server = ControlServer(path, answer)
    background.run(server.start)
    yield path
    background.run(server.stop)
    shutil.rmtree(short)


def test_node_status_is_status(capsys: pytest.CaptureFixture[str], node_socket: Path) -> None:
    for flags in ([], ["--json"]):
        main = run(capsys, "status", "--socket", str(node_socket), *flags)
        alias = run(capsys, "node", "status", "--socket", str(node_socket), *flags)
        assert main == alias
        assert main[0] == 0 and main[2] == ""
    assert json.loads(main[1]) == STATUS
    text = run(capsys, "status", "--socket", str(node_socket))[1]
    # What each of the two old renderers showed is in the one view.
    for shown in ("n1", "node id id-1", "encryption: on (authenticated key exchange)",
                  "controller 10.77.0.1:7444: connected since 10:00", "desired state: v3",
                  "10.250.1.0/24, fd00:1234:5678:1::/64", "eth1", "n2", "0.70 ms", "no-mapping",
                  "map-cache", "recent: map-server 10.77.0.9 timed out"):  # fmt: skip
        assert shown in text, shown


def test_a_node_refusal_is_one_line(capsys: pytest.CaptureFixture[str], node_socket: Path) -> None:
    code, out, err = run(capsys, "netcheck", "--socket", str(node_socket))
    assert (code, out) == (1, "")
    assert err == "lispmesh: error: the node refused 'netcheck': unknown command netcheck\n"


# ------------------------------------------------------------------------ a real controller


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def controller(background: Background, tmp_path: Path) -> Iterator[Path]:
    from controller_api.server import Controller
    from controller_api.settings import ControllerSettings

    state = tmp_path / "ctl"

    async def start() -> Controller:
        ctl = Controller(
            ControllerSettings(state_dir=state, listen_host="127.0.0.1", listen_port=_free_port(),
                               api_port=_free_port(), map_server_port=0)
        )  # fmt: skip
        await ctl.start()
        return ctl

    ctl = background.run(start)
    yield state
    background.run(ctl.stop)


def _no_clock(text: str) -> str:
    """The topology is stamped with the time it was made; two calls may differ in that only."""
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", text)


def test_controller_topology_is_topology(
    capsys: pytest.CaptureFixture[str], controller: Path
) -> None:
    state = ["--state-dir", str(controller)]
    for flags in ([], ["--json"], ["--tree"], ["--dot"], ["--mermaid"]):
        main = run(capsys, "topology", *state, *flags)
        alias = run(capsys, "controller", "topology", *state, *flags)
        assert main[0] == alias[0] == 0, (main[2], alias[2])
        assert _no_clock(main[1]) == _no_clock(alias[1])
    doc = json.loads(run(capsys, "controller", "topology", *state, "--json")[1])
    assert doc["nodes"] == [] and doc["links"] == [] and doc["map_servers"]


def test_admin_verbs_against_a_controller(
    capsys: pytest.CaptureFixture[str], controller: Path, tmp_path: Path
) -> None:
    state = ["--state-dir", str(controller)]
    code, out, err = run(capsys, "controller", "token", "create", "--uses", "2", *state)
    assert code == 0 and out.startswith("lmj1.") and "2 use(s)" in err
    listed = json.loads(run(capsys, "controller", "token", "list", *state, "--json")[1])
    assert [t["max_uses"] for t in listed["tokens"]] == [2]
    code, _, err = run(capsys, "controller", "node", "describe", "nobody", *state)
    assert code == 1 and err.startswith("lispmesh: error: ") and err.count("\n") == 1
    shown = json.loads(run(capsys, "policy", "show", *state, "--json")[1])
    assert shown["installed"] is False
    policy = tmp_path / "p.yml"
    policy.write_text("version: 1\nrules:\n  - {name: ping-all, from: any, to: any, proto: icmp}\n")
    code, out, _ = run(capsys, "policy", "check", str(policy), *state)
    assert code == 0 and out.startswith(f"{policy}: OK: 1 rule(s)")
    # The controller going away turns `check` into a syntax check that says why.
    code, out, _ = run(capsys, "policy", "check", str(policy), "--controller", "127.0.0.1:1",
                       *state)  # fmt: skip
    assert code == 0 and "syntax OK" in out and "cannot reach the controller" in out
