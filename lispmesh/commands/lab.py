"""`lispmesh lab ...`: containerlab's verbs, flags and output shapes over netlab.

deploy, destroy, inspect, graph, exec, tools link {show,set}, tools netem {set,show}.
netlab's own errors (`netlab.NetlabError`) reach `lispmesh.cli.main` as they are: one line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from lispmesh.commands.options import Subparsers, group
from lispmesh.commands.output import write_text
from lispmesh.errors import CliError
from lispmesh.views import lab as lab_view
from netlab import NetlabError, destroy, graph, inspect, labdir, netns, state, tools, topology
from netlab.model import Topology


def _topology_path(args: argparse.Namespace) -> tuple[Path, dict[str, str] | None]:
    """The topology file to use, and the registry entry when the lab was found by --name."""
    if getattr(args, "topo", None):
        return Path(args.topo), None
    lab = getattr(args, "name", None)
    if lab:
        entry = state.lookup(lab)
        if entry is None:
            raise CliError(f"no deployed lab named '{lab}' (give the topology with -t FILE)")
        return Path(entry["topology"]), entry
    found = sorted(Path.cwd().glob("*.clab.y*ml"))
    if len(found) == 1:
        return found[0], None
    raise CliError(
        "no topology file given: use -t FILE"
        + (f" (several in this directory: {', '.join(p.name for p in found)})" if found else "")
    )


def _from_entry(entry: dict[str, str]) -> Topology:
    """A registered lab's topology, with its lab directory where it was deployed."""
    topo = topology.parse_file(entry["topology"], name=entry["lab"])
    topo.workdir = Path(entry["labdir"]).parent
    return topo


def _load(args: argparse.Namespace, warn: bool = False) -> Topology:
    path, entry = _topology_path(args)
    if entry is not None:
        topo = _from_entry(entry)
    else:
        # -t with --name renames the lab (containerlab's deploy --name).
        topo = topology.parse_file(path, name=getattr(args, "name", None) or None)
    if warn:
        for w in topo.warnings:
            print(w, file=sys.stderr)
    return topo


# --- verbs -------------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    from netlab.deploy import Deployer, total_steps

    topo = _load(args, warn=True)
    if args.max_workers is not None and args.max_workers < 1:
        raise CliError("--max-workers must be at least 1")
    deployer = Deployer(topo, max_workers=args.max_workers, exec_timeout=args.exec_timeout)
    if sys.stdout.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]deploy {task.fields[lab]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} {task.description}"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("", total=total_steps(topo), lab=topo.name)
            deployer.progress = lambda msg: bar.update(task, advance=1, description=msg)
            result = deployer.deploy(reconfigure=args.reconfigure)
    else:
        result = deployer.deploy(reconfigure=args.reconfigure)
    if result == "unchanged":
        print(
            f"lab '{topo.name}' is already deployed from this topology: nothing changed "
            "(use --reconfigure to rebuild it)",
            file=sys.stderr,
        )
    _print_inspect([topo], args.format)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    if args.all:
        names = destroy.destroy_all(cleanup=args.cleanup)
        print(
            f"destroyed {len(names)} lab(s)" + (f": {', '.join(names)}" if names else ""),
            file=sys.stderr,
        )
        return 0
    topo = _load(args)
    if destroy.destroy_topology(topo, cleanup=args.cleanup):
        print(f"destroyed lab '{topo.name}'", file=sys.stderr)
    else:
        print(f"lab '{topo.name}' is not deployed: nothing to destroy", file=sys.stderr)
    return 0


def _deployed_topologies() -> list[Topology]:
    out = []
    for entry in state.all_labs():
        try:
            out.append(_from_entry(entry))
        except NetlabError as exc:
            print(f"lab {entry['lab']}: {exc}", file=sys.stderr)
    return out


def _print_inspect(topos: list[Topology], fmt: str) -> None:
    rows = [r for t in topos for r in inspect.rows(t)]
    if fmt == "json":
        print(inspect.to_json(rows))
    else:
        lab_view.console().print(lab_view.containers(rows))


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.all:
        topos = _deployed_topologies()
        if not topos and args.format != "json":
            print("no labs deployed", file=sys.stderr)
            return 0
    else:
        topos = [_load(args)]
        if args.details:
            print(json.dumps(labdir.topology_data(topos[0]), indent=2))
            return 0
    _print_inspect(topos, args.format)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    topo = _load(args)
    if args.dot:
        write_text(args.output, graph.to_dot(topo), announce=True)
    elif args.mermaid:
        write_text(args.output, graph.to_mermaid(topo), announce=True)
    if args.svg:
        write_text(args.svg, graph.to_svg(topo), announce=True)
    if args.html or not (args.dot or args.mermaid or args.svg):
        out = Path(args.html) if args.html else topo.labdir / "graph" / f"{topo.name}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(str(out), graph.to_html(topo), announce=True)
    return 0


def _select_nodes(topo: Topology, label_filters: list[str]) -> list[str]:
    wanted = []
    for f in label_filters:
        if "=" not in f:
            raise CliError(f"--label '{f}' must be key=value (e.g. clab-node-name=r1)")
        wanted.append(tuple(f.split("=", 1)))
    out = []
    for n in topo.nodes.values():
        labels = labdir.labels(topo, n.name)
        if all(labels.get(k) == v for k, v in wanted) and n.ns is not None:
            out.append(n.name)
    return out


def cmd_exec(args: argparse.Namespace) -> int:
    topo = _load(args)
    nodes = _select_nodes(topo, args.label or [])
    if not nodes:
        raise CliError("no node matches the given labels")
    try:
        argv = shlex.split(args.cmd)
    except ValueError as exc:
        raise CliError(f"cannot split --cmd: {exc}") from None
    results: dict[str, list[dict[str, Any]]] = {}
    worst = 0
    for name in nodes:
        ns = topo.nodes[name].ns
        assert ns is not None
        if not netns.exists(ns):
            raise CliError(f"lab '{topo.name}' is not deployed (no namespace {ns})")
        entry: dict[str, Any]
        try:
            res = netns.run(ns, argv, env=topo.nodes[name].env, timeout=args.timeout)
            entry = {
                "cmd": argv,
                "return-code": res.returncode,
                "stdout": res.stdout,
                "stderr": res.stderr,
            }
        except FileNotFoundError:
            entry = {
                "cmd": argv,
                "return-code": 127,
                "stdout": "",
                "stderr": f"{argv[0]}: command not found",
            }
        except Exception as exc:  # a timeout on one node must not hide the others' output
            entry = {"cmd": argv, "return-code": 124, "stdout": "", "stderr": str(exc)}
        worst = max(worst, int(entry["return-code"]))
        results[ns] = [entry]
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        for ns, entries in results.items():
            for e in entries:
                print(
                    f'Executed command "{args.cmd}" on the node "{ns}". '
                    f"exit code: {e['return-code']}"
                )
                if e["stdout"]:
                    sys.stdout.write(
                        e["stdout"] if e["stdout"].endswith("\n") else e["stdout"] + "\n"
                    )
                if e["stderr"]:
                    sys.stderr.write(
                        e["stderr"] if e["stderr"].endswith("\n") else e["stderr"] + "\n"
                    )
    return 0 if worst == 0 else 1


def cmd_link_show(args: argparse.Namespace) -> int:
    topo = _load(args)
    rows = tools.show_links(topo)
    if args.format == "json":
        print(json.dumps({"links": rows}, indent=2))
        return 0
    lab_view.console().print(lab_view.links(rows))
    return 0


def cmd_link_set(args: argparse.Namespace) -> int:
    topo = _load(args)
    if not any((args.state, args.rate, args.delay, args.jitter, args.loss, args.clear)):
        raise CliError("nothing to set: give --state, --rate, --delay, --jitter, --loss or --clear")
    node, _, iface = args.endpoint.partition(":")
    t = tools.target(topo, node, iface)
    tools.set_link(
        t,
        state=args.state,
        rate=args.rate,
        delay=args.delay,
        jitter=args.jitter,
        loss=args.loss,
        clear=args.clear,
    )
    print(f"{args.endpoint}: " + json.dumps(tools.qdisc(t)), file=sys.stderr)
    return 0


def _netem_target(args: argparse.Namespace) -> tools.Target:
    """containerlab's `-n NODE` is a container name (clab-lab-r1); a bare node name needs -t."""
    if args.topo:
        topo = _load(args)
        for n in topo.nodes.values():
            if args.node in (n.name, n.ns):
                return tools.target(topo, n.name, args.interface)
        raise CliError(f"lab '{topo.name}' has no node '{args.node}'")
    if not netns.exists(args.node):
        raise CliError(f"no namespace '{args.node}' (give the lab with -t FILE)")
    return tools.Target(args.node, args.node, args.interface)


def cmd_netem_set(args: argparse.Namespace) -> int:
    t = _netem_target(args)
    rate = str(args.rate) if args.rate is not None else None
    tools.set_link(t, rate=rate, delay=args.delay, jitter=args.jitter, loss=args.loss)
    print(json.dumps(tools.qdisc(t)))
    return 0


def cmd_netem_show(args: argparse.Namespace) -> int:
    t = _netem_target(args)
    print(json.dumps({f"{t.node}:{t.ifname}": tools.qdisc(t)}, indent=2))
    return 0


# --- argparse wiring ---------------------------------------------------------------------------


def _topo_args(p: argparse.ArgumentParser, name_help: str = "lab name") -> None:
    p.add_argument("-t", "--topo", metavar="FILE", help="topology file (*.clab.yml)")
    p.add_argument("--name", help=name_help)


def register(subparsers: Subparsers) -> None:
    _, verbs = group(
        subparsers, "lab", "containerlab-compatible labs of network namespaces", "VERB"
    )

    p = verbs.add_parser("deploy", help="build a lab from a topology file")
    _topo_args(p, "lab name (overrides the file's)")
    p.add_argument(
        "-c",
        "--reconfigure",
        action="store_true",
        help="destroy the lab first if it is deployed, then deploy it",
    )
    p.add_argument("--max-workers", type=int, default=None, help="parallel node/link workers")
    p.add_argument(
        "--exec-timeout",
        type=float,
        default=30.0,
        help="seconds each exec command may take (default 30)",
    )
    p.add_argument("-f", "--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_deploy)

    p = verbs.add_parser("destroy", help="remove everything a deploy created")
    _topo_args(p)
    p.add_argument("-a", "--all", action="store_true", help="destroy every deployed lab")
    p.add_argument("-c", "--cleanup", action="store_true", help="also delete the lab directory")
    p.set_defaults(handler=cmd_destroy)

    p = verbs.add_parser("inspect", help="show the nodes of a lab")
    _topo_args(p)
    p.add_argument("-a", "--all", action="store_true", help="show every deployed lab")
    p.add_argument("-f", "--format", choices=("table", "json"), default="table")
    p.add_argument("--details", action="store_true", help="print topology-data.json")
    p.set_defaults(handler=cmd_inspect)

    p = verbs.add_parser("graph", help="draw the topology (HTML by default)")
    _topo_args(p)
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    p.add_argument("--mermaid", action="store_true", help="print a mermaid graph")
    p.add_argument("-o", "--output", metavar="FILE", help="write --dot/--mermaid to FILE")
    p.add_argument("--svg", metavar="FILE", help="write an SVG picture (needs graphviz)")
    p.add_argument("--html", metavar="FILE", help="write an HTML page embedding the SVG")
    p.set_defaults(handler=cmd_graph)

    p = verbs.add_parser("exec", help="run a command in lab nodes")
    _topo_args(p)
    p.add_argument("--cmd", required=True, help="command to run (split like a shell, no shell)")
    p.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="select nodes by label, e.g. clab-node-name=r1 (repeatable)",
    )
    p.add_argument("-f", "--format", choices=("plain", "json"), default="plain")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per node (default 30)")
    p.set_defaults(handler=cmd_exec)

    _, tverbs = group(verbs, "tools", "link state, rate, delay and loss", "TOOL")
    _, lverbs = group(tverbs, "link", "show or set link state and shaping", "ACTION")
    ls = lverbs.add_parser("show", help="state, MTU and shaping of every link end")
    _topo_args(ls)
    ls.add_argument("-f", "--format", choices=("table", "json"), default="table")
    ls.set_defaults(handler=cmd_link_show)
    lset = lverbs.add_parser("set", help="set one link end's state and egress shaping")
    _topo_args(lset)
    lset.add_argument("-e", "--endpoint", required=True, metavar="NODE:IF")
    lset.add_argument("--state", choices=("up", "down"))
    lset.add_argument("--rate", help="rate limit (tbf), e.g. 10mbit; 0 removes it")
    lset.add_argument("--delay", help="delay (netem), e.g. 50ms")
    lset.add_argument("--jitter", help="delay jitter (netem), e.g. 5ms")
    lset.add_argument("--loss", help="loss (netem), e.g. 1%%")
    lset.add_argument("--clear", action="store_true", help="remove any shaping first")
    lset.set_defaults(handler=cmd_link_set)

    _, nverbs = group(tverbs, "netem", "containerlab-style netem on one interface", "ACTION")
    for action in ("set", "show"):
        np_ = nverbs.add_parser(action, help=f"{action} impairments of an interface")
        np_.add_argument("-t", "--topo", metavar="FILE", help="topology (when -n is a node name)")
        np_.add_argument("-n", "--node", required=True, help="node or namespace name")
        np_.add_argument("-i", "--interface", required=True)
        if action == "set":
            np_.add_argument("--delay")
            np_.add_argument("--jitter")
            np_.add_argument("--loss")
            np_.add_argument("--rate", help="kbit/s (containerlab) or e.g. 10mbit")
            np_.set_defaults(handler=cmd_netem_set, name=None)
        else:
            np_.set_defaults(handler=cmd_netem_show, name=None)
