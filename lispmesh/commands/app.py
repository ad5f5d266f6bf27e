"""`lispmesh app ...`: run edge containers (OCI image layouts: containers or VMs) on this node.

    lispmesh app run IMAGE [--name N] [--ref R] [--eid A] [--eid6 A]   # import, verify, start
    lispmesh app ls | inspect NAME | start NAME | stop NAME | rm NAME
    lispmesh app logs NAME [--tail N] [--follow]   # a workload, or this node's replicas of app NAME
    lispmesh app supervise            # the loop that restarts crashed workloads (the agent's job)
    lispmesh app deploy FILE --dry-run --nodes NODES.yml [--seed N]   # where the controller
                                                                      # would place an app spec
    lispmesh app deploy FILE            # the controller stores and places it on the nodes
    lispmesh app status NAME | explain NAME   # replicas, nodes, EIDs, states; why placed so
    lispmesh app ls --cluster | rm NAME --cluster  # the controller's apps (not this node's)

The manual path for tests and for a node without a controller: the verbs work on the node's
workload state dir directly (under its lock), and workloads keep running without any of them.

`deploy --dry-run` is the controller side (issue 14): it checks the app spec (one line naming
file:line and field when it is wrong) and prints the plan the scheduler makes on the nodes
described in NODES.yml (`controller_api.placement.nodes_file`), with the reason for every
placement and for every replica it cannot place; exit 1 if some replica cannot be placed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from lispmesh.commands.options import Subparsers, add_json, group
from lispmesh.commands.output import console, print_json
from lispmesh.errors import CliError

DEFAULT_STATE_DIR = Path("/var/lib/lispmesh/workloads")


def _supervisor(args: argparse.Namespace) -> Any:
    from node.workloads.supervisor import node_supervisor

    return node_supervisor(
        Path(args.state_dir), Path(args.runc_root) if args.runc_root else None, args.prefix,
        args.libvirt_uri, args.node_netns, args.stop_timeout,
    )  # fmt: skip


def _address(text: str | None, version: int) -> Any:
    if text is None:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        raise CliError(f"{text!r} is not an IP address") from None
    if address.version != version:
        raise CliError(f"{text} is not an IPv{version} address")
    return address


def _host_if(name: str) -> str:
    import hashlib

    return "lmw" + hashlib.sha256(name.encode()).hexdigest()[:12]  # 15 characters


def _show(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    from lispmesh.views import apps

    if args.json:
        print_json(doc)
    else:
        apps.workload(doc, console())


def _fail_unless_running(doc: dict[str, Any]) -> None:
    if doc["state"] in ("BROKEN", "FAILED"):
        raise CliError(f"{doc['name']}: {doc['state']}: {doc['last_error']}")


def _run(args: argparse.Namespace) -> int:
    from node.workloads.lifecycle import Restart
    from node.workloads.runtime import Attachment

    eid4: IPv4Address | None = _address(args.eid, 4)
    eid6: IPv6Address | None = _address(args.eid6, 6)
    source = Path(args.image)
    name = args.name
    supervisor = _supervisor(args)
    with supervisor.locked():
        attachment = None
        if eid4 or eid6:
            attachment = Attachment(_host_if(name or source.name), eid4, eid6)
        doc = supervisor.run(source, name, args.ref, attachment, Restart(args.restart))
    _show(args, doc)
    _fail_unless_running(doc)
    return 0


def _ls(args: argparse.Namespace) -> int:
    from lispmesh.views import apps

    supervisor = _supervisor(args)
    with supervisor.locked():
        rows = supervisor.list()
    if args.json:
        print_json(rows)
    else:
        apps.workloads(rows, console())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    supervisor = _supervisor(args)
    with supervisor.locked():
        doc = supervisor.describe(args.name, detail=True)
    _show(args, doc)
    return 0


def _logs(args: argparse.Namespace) -> int:
    """The end of each log (prefixed `name | ` when there are several: an app's replicas), then,
    with --follow, what they append until interrupted. The supervisor's lock is held only to
    find the files: a follow never blocks the agent."""
    from node.workloads.console_log import Follower, tail

    if args.follow and args.json:
        raise CliError("--follow prints text as it comes; leave out --json")
    if args.tail is not None and args.tail < 0:
        raise CliError(f"--tail {args.tail}: a number of lines, 0 or more")
    supervisor = _supervisor(args)
    with supervisor.locked():
        paths = supervisor.log_paths(args.name)
    ends = {}
    docs = []
    for name, path in paths:
        text, ends[name] = tail(path, args.tail, args.bytes)
        docs.append({"name": name, "logs": text})
        if not args.json:
            _write_prefixed(text, name if len(paths) > 1 else "")
    if args.json:
        print_json(
            docs[0] if args.name == docs[0]["name"] else {"app": args.name, "replicas": docs}
        )
        return 0
    if not args.follow:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    followers = [(name, Follower(path, ends[name])) for name, path in paths]
    try:
        while not stop.is_set():
            for name, follower in followers:
                _write_prefixed(follower.read(), name if len(paths) > 1 else "")
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    return 0


def _write_prefixed(text: str, name: str) -> None:
    if name:
        text = "".join(f"{name} | {line}" for line in text.splitlines(keepends=True))
    sys.stdout.write(text)
    sys.stdout.flush()


def _want(desired: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from node.workloads.lifecycle import Desired

        supervisor = _supervisor(args)
        with supervisor.locked():
            doc = supervisor.want(args.name, Desired(desired))
        if args.json:
            print_json(doc)
        else:
            print(f"{doc['name']}: {doc['state']}")
        _fail_unless_running(doc)
        return 0

    return handler


def _supervise(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s workloads %(levelname)s %(message)s")  # fmt: skip
    supervisor = _supervisor(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from node.workloads.supervisor import supervise_once

    while True:
        supervise_once(supervisor)
        if args.once or stop.wait(args.interval):
            return 0


# ---------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, cluster: bool = False) -> None:
    if cluster:  # the controller's apps with --cluster: then --state-dir is the controller's
        parser.add_argument("--cluster", action="store_true",
                            help="the controller's apps, not this node's workloads")  # fmt: skip
        _controller_flags(parser)
        parser.add_argument("--state-dir", help=f"the node's workload state dir "
                            f"({DEFAULT_STATE_DIR}); with --cluster, the controller's")  # fmt: skip
    else:
        parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                            help=f"the workload state dir ({DEFAULT_STATE_DIR})")  # fmt: skip
    parser.add_argument("--libvirt-uri", default="qemu:///system", help="libvirt for VMs")
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds from the graceful stop to the forced one")  # fmt: skip
    # For tests and labs: runc's state dir, the id prefix, the namespace of the node's side.
    parser.add_argument("--runc-root", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="lm-", help=argparse.SUPPRESS)
    parser.add_argument("--node-netns", help=argparse.SUPPRESS)
    add_json(parser)


def _deploy(args: argparse.Namespace) -> int:
    from controller_api.apps import parse_app
    from controller_api.placement import ClusterState, schedule
    from controller_api.placement.nodes_file import parse_nodes
    from lispmesh.views.placement import plan_data, plan_table

    if not args.dry_run:
        return _deploy_at_controller(args)
    if args.nodes is None:
        raise CliError("app deploy --dry-run: give the cluster with --nodes NODES.yml")
    spec = parse_app(_read_text(args.file), args.file)
    nodes = parse_nodes(_read_text(args.nodes), args.nodes)
    plan = schedule(ClusterState(nodes), spec, seed=args.seed)
    if args.json:
        print_json(plan_data(plan))
    else:
        plan_table(plan, console())
    return 1 if plan.failures else 0


def _ask(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    from lispmesh.commands.rpc import ask_controller

    if getattr(args, "state_dir", None) is None:
        from controller_api.settings import DEFAULT_STATE_DIR

        args.state_dir = str(DEFAULT_STATE_DIR)
    return ask_controller(args, rpc, request, service="AppAdmin")


def _deploy_at_controller(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import apps_pb2

    document = apps_pb2.AppDocument(text=_read_text(args.file), filename=Path(args.file).name)
    result = _ask(args, "Deploy", document)
    if args.json:
        print_json(result)
    if not result.ok:
        raise CliError(result.error)
    if not args.json:
        verb = "deployed" if result.created else "updated"
        print(f"app {result.name} {verb} (version {result.version})")
        for line in result.plan:
            print(f"  {line}")
    return 0


def _app_status(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import apps_pb2
    from lispmesh.views.placement import app_status_table

    status = _ask(args, "Status", apps_pb2.AppRequest(name=args.name))
    if args.json:
        print_json(status)
    else:
        app_status_table(status, console())
    return 0


def _app_explain(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import apps_pb2

    explanation = _ask(args, "Explain", apps_pb2.AppRequest(name=args.name))
    if args.json:
        print_json(explanation)
    else:
        for line in explanation.plan:
            print(line)
        if explanation.events:
            print("last decisions:")
            for line in explanation.events:
                print(f"  {line}")
    return 0


def _cluster_ls(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import apps_pb2
    from lispmesh.views.placement import apps_table

    result = _ask(args, "List", apps_pb2.ListAppsRequest())
    if args.json:
        print_json(result)
    else:
        apps_table(result.apps, console())
    return 0


def _cluster_rm(args: argparse.Namespace) -> int:
    from controller_api.gen.lispmesh.v1 import apps_pb2
    from lispmesh.views.placement import app_status_table

    status = _ask(args, "Remove", apps_pb2.AppRequest(name=args.name))
    if args.json:
        print_json(status)
    else:
        app_status_table(status, console())
    return 0


def _controller_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", help="the controller's API address HOST:PORT")
    parser.add_argument("--admin-cert", help="admin certificate (default: STATE_DIR/admin.crt)")
    parser.add_argument("--admin-key", help="admin key (default: STATE_DIR/admin.key)")
    parser.add_argument("--ca-cert", help="controller CA (default: STATE_DIR/ca.crt)")


def _node_or_cluster(node: Any, cluster: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        if args.cluster:
            return int(cluster(args))
        if args.state_dir is None:
            args.state_dir = str(DEFAULT_STATE_DIR)
        return int(node(args))

    return handler


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a text file") from None


def register(subparsers: Subparsers) -> None:
    _, sub = group(
        subparsers, "app", "workloads on this node (run, ls, inspect, logs, stop, rm); deploy"
    )

    run = sub.add_parser("run", help="import an OCI image layout (dir or tarball) and run it")
    run.add_argument("image", help="an OCI image layout directory or a tarball of one")
    run.add_argument("--name", help="the workload's name (default: from the image)")
    run.add_argument("--ref", help="which image of the layout (org.opencontainers.image.ref.name)")
    run.add_argument("--eid", help="its IPv4 EID (a /32 routed to it from this node)")
    run.add_argument("--eid6", help="its IPv6 EID (a /128)")
    run.add_argument("--restart", choices=["always", "on-failure", "never"], default="always")
    _common(run)
    run.set_defaults(handler=_run)

    ls = sub.add_parser("ls", help="the workloads on this node (--cluster: the controller's apps)")
    _common(ls, cluster=True)
    ls.set_defaults(handler=_node_or_cluster(_ls, _cluster_ls))

    for verb, handler, text in (
        ("inspect", _inspect, "one workload in full: state, runtime, resources, usage"),
        (
            "logs",
            _logs,
            "a workload's console or stdout/stderr (or this node's replicas of an app)",
        ),
        ("start", _want("running"), "start a halted workload"),
        ("stop", _want("halted"), "stop a workload (graceful, then forced)"),
        ("rm", _want("absent"), "stop and remove a workload"),
    ):
        parser = sub.add_parser(verb, help=text)
        parser.add_argument("name")
        if verb == "logs":
            parser.add_argument(
                "--bytes",
                type=int,
                default=1 << 20,
                help="read at most this much from the end (1 MiB)",
            )
            parser.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
            parser.add_argument(
                "--follow",
                "-f",
                action="store_true",
                help="then print what comes, until interrupted",
            )
        _common(parser, cluster=verb == "rm")
        parser.set_defaults(
            handler=_node_or_cluster(handler, _cluster_rm) if verb == "rm" else handler
        )

    supervise = sub.add_parser("supervise", help="restart crashed workloads (runs until killed)")
    supervise.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    supervise.add_argument("--once", action="store_true", help="one check, then exit")
    _common(supervise)
    supervise.set_defaults(handler=_supervise)

    deploy = sub.add_parser("deploy", help="place an app spec on the nodes (--dry-run: the plan)")
    deploy.add_argument("file", help="the app spec (YAML, see examples/app.yml)")
    deploy.add_argument(
        "--dry-run", action="store_true", help="print the plan and why; change nothing"
    )
    deploy.add_argument("--nodes", help="plan on the nodes described in this file")
    deploy.add_argument("--seed", type=int, default=0, help="the scheduler's seed (0)")
    deploy.add_argument("--state-dir", help="the controller's state dir (admin certificate)")
    _controller_flags(deploy)
    add_json(deploy)
    deploy.set_defaults(handler=_deploy)

    for verb, handler, text in (
        ("status", _app_status, "an app at the controller: replicas, nodes, EIDs, states"),
        ("explain", _app_explain, "why the controller places an app where it does"),
    ):
        parser = sub.add_parser(verb, help=text)
        parser.add_argument("name")
        parser.add_argument("--state-dir", help="the controller's state dir (admin certificate)")
        _controller_flags(parser)
        add_json(parser)
        parser.set_defaults(handler=handler)
