"""Policy benchmark: one TCP stream through the overlay with no policy and with 1,000 rules.

The issue's target: with 1,000 rules installed, data-plane throughput stays within 10% of the
same run with no policy. One lab (tests/integration/overlay.py: a map-server, xTRs n1 and n2 on
the default data plane) and the same two node processes serve every measurement: between runs
the policy is switched at run time (config rewritten, `reload` on the control socket), so both
variants share processes, keys, map-caches and machine. Rounds alternate the order (none, rules;
rules, none; ...) so a drift of the machine's load does not favour one side.

The 1,000 rules are the worst case for first-match evaluation: 998 that do not match the stream
(half of them TCP to n2's EID on other ports, so every field is compared; half to other
prefixes), then ICMP (the reachability check), then the rule that allows iperf3 (TCP to 5201)
last: on n1 as egress rules, on n2 as ingress rules (the replies pass as return traffic, without
rules). Only a flow's first packet walks the rules; every other packet costs a flow-table lookup,
which is what the stream measures.

Per run, from bench/overlay_bench.py's helpers: iperf3 receiver Gbit/s, retransmits, CPU steal,
Gbit/s per core received, CPU seconds of both node processes and Gbit per daemon CPU-second (the
steadiest figure on a shared machine). The verdict compares the means of the two variants.

Usage (root, from the repository root):
    python3 bench/policy_bench.py [--seconds 10] [--rounds 2] [--rules 1000] [--json]
                                  [--dataplane auto|c|python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/overlay_bench.py and the repository

from overlay_bench import Resources, Row, fmt, measure_iperf, wait_for  # noqa: E402

from tests.integration.overlay import OverlayLab, XtrSpec, eid4  # noqa: E402

NO_POLICY, WITH_RULES = "no policy", "rules"
IPERF_PORT = 5201
TARGET = 0.90  # the issue: within 10% of the run without a policy


def filler(count: int, peer: str, field: str) -> list[dict[str, Any]]:
    """Rules that never match the iperf3 stream, in the costliest order to walk past."""
    rules = []
    for i in range(count):
        if i % 2 == 0:  # the right peer and protocol, the wrong port: every field is compared
            rule = {field: [f"{peer}/32"], "protocol": "tcp", "ports": [[6000 + i, 6000 + i]]}
        else:  # another prefix
            rule = {
                field: [f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                "protocol": "tcp",
                "ports": [[IPERF_PORT, IPERF_PORT]],
            }
        rules.append({"id": i, "name": f"filler-{i}", "action": "allow", **rule})
    return rules


def policies(count: int, version: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(n1, n2): `count` rules each, the one the stream needs last."""
    n1, n2 = eid4(1), eid4(2)
    ping = {"id": count - 2, "name": "ping", "action": "allow", "protocol": "icmp"}
    out = {
        "id": count - 1,
        "name": "iperf3",
        "action": "allow",
        "protocol": "tcp",
        "dst": [f"{n2}/32"],
        "ports": [IPERF_PORT],
    }
    into = {**out, "dst": [], "src": [f"{n1}/32"]}
    return (
        {"version": version, "egress": [*filler(count - 2, n2, "dst"), ping, out]},
        {"version": version, "ingress": [*filler(count - 2, n1, "src"), ping, into]},
    )


def run(args: argparse.Namespace, res: Resources, workdir: Path, say: Any) -> dict[str, Any]:
    specs = [XtrSpec(i, dataplane=args.dataplane) for i in (1, 2)]
    lab = OverlayLab(workdir / "lab", specs, name_prefix="pb")
    res.labs.append(lambda: lab.__exit__(None, None, None))
    lab.__enter__()
    assert lab.lab is not None
    ns1, ns2 = lab.lab.netns_name("n1"), lab.lab.netns_name("n2")
    lab.wait_registered(timeout=30)
    lab.wait_ping("n1", eid4(2), timeout=20)
    pids = [int(lab.status(n)["pid"]) for n in ("n1", "n2")]
    dataplane = lab.status("n1")["xtr"]["dataplane"]
    runs: dict[str, list[Row]] = {NO_POLICY: [], WITH_RULES: []}
    checks: dict[str, Any] = {}
    version = 0
    for round_index in range(args.rounds):
        order = [NO_POLICY, WITH_RULES] if round_index % 2 == 0 else [WITH_RULES, NO_POLICY]
        for variant in order:
            if variant == NO_POLICY:
                for node in ("n1", "n2"):
                    lab.set_policy(node, None)
            else:
                version += 1
                started = time.monotonic()
                first, second = policies(args.rules, version)
                lab.set_policy("n1", first)
                lab.set_policy("n2", second)
                checks["reload_seconds"] = round(time.monotonic() - started, 2)
            wait_for(lambda: lab.ping("n1", eid4(2), count=1, timeout=1), 10, "ping n1 -> n2")
            row = Row(f"{variant} #{round_index + 1}")
            say(f"  round {round_index + 1}: {variant} ...")
            measure_iperf(row, res, ns1, ns2, eid4(2), args.seconds, pids, workdir)
            runs[variant].append(row)
            checks[variant] = verify(lab, variant, args.rules)
    return {"dataplane": dataplane, "runs": runs, "checks": checks}


def verify(lab: OverlayLab, variant: str, count: int) -> dict[str, Any]:
    """The variant really was in force: no policy at all, or the rules with the stream's last."""
    found: dict[str, Any] = {}
    for node, direction in (("n1", "egress"), ("n2", "ingress")):
        xtr = lab.status(node)["xtr"]
        policy = xtr["policy"]
        if variant == NO_POLICY:
            assert not policy["installed"], policy
            continue
        rules = policy["rules"][direction]
        assert len(rules) == count, len(rules)
        last = rules[-1]
        assert last["name"] == "iperf3" and last["packets"] > 0, last
        assert sum(r["packets"] for r in rules[:-2]) == 0  # the filler never matched
        found[node] = {
            "rules": len(rules),
            "stream_rule_packets": last["packets"],
            "policy_denied": xtr["drops"].get("policy-denied", 0),
        }
    return found


def mean(rows: list[Row], attr: str) -> float | None:
    values = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
    return statistics.fmean(values) if values else None


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    runs = result["runs"]
    summary: dict[str, Any] = {}
    for variant, rows in runs.items():
        summary[variant] = {
            "gbps": [round(r.gbps, 3) for r in rows if r.gbps is not None],
            "gbps_mean": mean(rows, "gbps"),
            "gbps_per_core_received": mean(rows, "gbps_per_core_received"),
            "gbit_per_daemon_cpu_s": mean(rows, "gbit_per_daemon_cpu_s"),
            "retransmits": mean(rows, "retransmits"),
            "steal_pct": mean(rows, "steal_pct"),
            "daemon_cpu_s": mean(rows, "daemon_cpu_s"),
        }
    ratios: dict[str, Any] = {}
    for key in ("gbps_mean", "gbps_per_core_received", "gbit_per_daemon_cpu_s"):
        base, ruled = summary[NO_POLICY][key], summary[WITH_RULES][key]
        ratios[key] = ruled / base if base and ruled else None
    # Each round's two runs are back to back: their ratio is the least exposed to slow drifts
    # of the machine's load.
    ratios["per_round"] = [
        round(ruled.gbps / base.gbps, 3)
        for base, ruled in zip(runs[NO_POLICY], runs[WITH_RULES], strict=True)
        if base.gbps and ruled.gbps
    ]
    ratios["per_round_median"] = (
        statistics.median(ratios["per_round"]) if ratios["per_round"] else None
    )
    return {"summary": summary, "ratios": ratios}


def print_report(result: dict[str, Any], figures: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"lispmesh data plane: {result['dataplane']}; one TCP stream n1 -> n2, "
        f"{args.seconds} s per run, {args.rounds} round(s)"
    )
    header = [
        "variant",
        "runs Gbit/s",
        "mean Gbit/s",
        "retr",
        "steal %",
        "Gbit/s per core",
        "daemon CPU s",
        "Gbit per CPU-s",
    ]
    lines = []
    for variant, s in figures["summary"].items():
        label = f"{args.rules:,} rules" if variant == WITH_RULES else variant
        lines.append(
            [
                label,
                " ".join(f"{g:.3f}" for g in s["gbps"]),
                fmt(s["gbps_mean"], ".3f"),
                fmt(s["retransmits"], ".0f"),
                fmt(s["steal_pct"], ".0f"),
                fmt(s["gbps_per_core_received"], ".3f"),
                fmt(s["daemon_cpu_s"], ".2f"),
                fmt(s["gbit_per_daemon_cpu_s"], ".3f"),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    r = figures["ratios"]
    verdict = "within" if r["gbps_mean"] and r["gbps_mean"] >= TARGET else "NOT within"
    print(
        f"ratio {args.rules:,} rules / no policy: throughput {fmt(r['gbps_mean'], '.3f')} "
        f"({verdict} 10%), per core received {fmt(r['gbps_per_core_received'], '.3f')}, "
        f"per daemon CPU-second {fmt(r['gbit_per_daemon_cpu_s'], '.3f')}; per round "
        f"{' '.join(f'{x:.3f}' for x in r['per_round'])} (median "
        f"{fmt(r['per_round_median'], '.3f')})"
    )
    print(f"checks: {json.dumps(result['checks'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="iperf3 time per run (1..30)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant (1..5)")
    parser.add_argument("--rules", type=int, default=1000, help="rules per node (3..5000)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of text")
    parser.add_argument(
        "--dataplane", choices=["auto", "c", "python"], default="auto", help="the nodes' data plane"
    )
    args = parser.parse_args(argv)
    if not (1 <= args.seconds <= 30 and 1 <= args.rounds <= 5 and 3 <= args.rules <= 5000):
        parser.error("--seconds 1..30, --rounds 1..5, --rules 3..5000")
    if os.geteuid() != 0:
        print("policy_bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("policy_bench: iperf3 is not installed (apt-get install iperf3)", file=sys.stderr)
        return 2
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    main_pid = os.getpid()

    def on_term(sig: int, _frame: Any) -> None:
        if os.getpid() != main_pid:  # a library's forked child (pyroute2): just leave
            os._exit(128 + sig)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    res = Resources()
    workdir = Path(tempfile.mkdtemp(prefix="policy-bench-"))
    try:
        say(f"building the lab, then {args.rounds} round(s) of {args.seconds} s per variant ...")
        result = run(args, res, workdir, say)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        try:
            res.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, old)
    figures = report(result, args)
    if args.json:
        runs = {v: [asdict(r) for r in rows] for v, rows in result["runs"].items()}
        print(
            json.dumps(
                {
                    **figures,
                    "runs": runs,
                    "checks": result["checks"],
                    "dataplane": result["dataplane"],
                },
                indent=2,
            )
        )
    else:
        print_report(result, figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
