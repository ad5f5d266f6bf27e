"""`lispmesh node ...`: join the mesh, run a node, and ask a running node how it is doing.

`node run --config FILE` runs a node from its own config file; without --config the node is
controller-managed (node/agent.py): it joins on first boot (--controller, --token) and reuses
its identity from the state dir on every later boot. `node status` is the older spelling of
`lispmesh status` (the same verb, flags and output).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from lispmesh.commands import ops
from lispmesh.commands.options import DEFAULT_RUN_DIR, Subparsers, group
from lispmesh.errors import CliError

log = logging.getLogger("lispmesh.agent")
EXIT_REFUSED = 78  # as for a revoked node: restarting cannot help (the systemd unit knows it)


def _logging(level: str, name: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# run from a config file (no controller)


def _run(args: argparse.Namespace) -> int:
    from mesh.config import load_config
    from mesh.node import NodeRuntime, NodeSetupError

    if not args.config:
        return _run_managed(args)
    config = load_config(Path(args.config))
    _logging(args.log_level or config.log_level, config.name)
    try:
        asyncio.run(NodeRuntime(config).run())
    except NodeSetupError as exc:
        raise CliError(f"node {config.name}: {exc}") from None
    return 0


# ---------------------------------------------------------------------------------------------
# join, and the controller-managed run


def _onboarding(args: argparse.Namespace) -> Any:
    from node.enroll import Onboarding

    if not args.onboarding_cert:
        return None
    if not args.onboarding_key:
        raise CliError("--onboarding-cert needs --onboarding-key")
    return Onboarding(Path(args.onboarding_cert), Path(args.onboarding_key))


def _enroll_once(args: argparse.Namespace, state: Any) -> Any:
    from node.enroll import enroll

    return enroll(
        state,
        args.controller,
        token=args.token,
        onboarding=_onboarding(args),
        name=args.name,
        ca_cert=Path(args.ca_cert) if args.ca_cert else None,
        tpm=args.tpm,
        event_log=Path(args.event_log),
    )


def _take_token(args: argparse.Namespace) -> None:
    """args.token from wherever the secret was given (node/join_secret.py says why)."""
    from node.join_secret import JoinSecretError, join_token

    try:
        args.token = join_token(args.token, args.token_file)
    except JoinSecretError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None


def _join(args: argparse.Namespace) -> int:
    from node.enroll import EnrollError
    from node.state import StateDir

    _take_token(args)
    if not args.controller:
        raise CliError("--controller is required")
    state = StateDir(Path(args.state_dir))
    if state.enrolled() and state.revoked_message() is None and not args.force:
        enrollment = state.load_enrollment()
        raise CliError(
            f"already enrolled as {enrollment.name} ({enrollment.node_id}) in {state.path} "
            "(--force to join again as a new node)"
        )
    try:
        enrollment = _enroll_once(args, state)
    except EnrollError as exc:
        raise CliError(str(exc), 1 if exc.retry else EXIT_REFUSED) from None
    print(
        f"joined as {enrollment.name} ({enrollment.node_id}): EIDs "
        f"{', '.join(enrollment.eid_prefixes)}, controller API {enrollment.api_address}"
    )
    return 0


def _join_on_boot(args: argparse.Namespace, state: Any) -> Any:
    """Enroll, retrying while the controller cannot be reached (it may boot after us)."""
    from node.backoff import Backoff
    from node.enroll import EnrollError

    if not args.controller or not (args.token or args.onboarding_cert):
        raise CliError(
            f"this node is not enrolled yet ({state.path}): give --controller and a join "
            "token (--token-file or $LISPMESH_TOKEN), or run `lispmesh node join` first"
        )
    backoff = Backoff(args.backoff_base, args.backoff_cap)
    while True:
        try:
            enrollment = _enroll_once(args, state)
        except EnrollError as exc:
            if not exc.retry:
                raise CliError(str(exc), EXIT_REFUSED) from None
            delay = backoff.next()
            log.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            continue
        log.info(
            "joined as %s (%s): EIDs %s",
            enrollment.name, enrollment.node_id, ", ".join(enrollment.eid_prefixes),
        )  # fmt: skip
        return enrollment


def _metrics_listen(text: str | None) -> str | None:
    """Checked now, so a bad address is one line at start, not an error after joining."""
    from common.prometheus import parse_listen

    if text is not None:
        parse_listen(text)
    return text


def _run_managed(args: argparse.Namespace) -> int:
    from node.agent import Agent, AgentOptions
    from node.node_key import NodeKey, NodeKeyError, tpm_for
    from node.state import StateDir

    state = StateDir(Path(args.state_dir))
    _logging(args.log_level or "info", "agent")
    _take_token(args)
    state.prepare()
    revoked = state.revoked_message()
    if revoked is not None and not args.token:
        raise CliError(f"{revoked} (join again with a new token)", EXIT_REFUSED)
    if state.enrolled() and revoked is None:
        enrollment = state.load_enrollment()
        if args.token:
            log.info("already enrolled as %s: --token not needed", enrollment.name)
    else:
        enrollment = _join_on_boot(args, state)
    options = AgentOptions(
        state_dir=state.path,
        run_dir=Path(args.run_dir),
        tun=args.tun,
        uplinks=tuple(args.uplink or ()),
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        metrics_interval=args.metrics_interval,
        metrics_listen=_metrics_listen(args.metrics_listen),
        event_log=Path(args.event_log),
        workloads_dir=Path(args.workloads_dir) if args.workloads_dir else None,
        workload_prefix=args.workload_prefix,
        workload_runc_root=Path(args.workload_runc_root) if args.workload_runc_root else None,
    )
    try:
        key = NodeKey.open(state, tpm_for(enrollment, args.tpm))
        key.check_certificate(state)
    except NodeKeyError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None
    try:
        code = asyncio.run(Agent(state, enrollment, options, key).run())
    finally:
        key.close()
    if code:
        raise CliError(state.revoked_message() or "the node agent stopped", code)
    return 0


# ---------------------------------------------------------------------------------------------
# wiring


def _join_options(parser: argparse.ArgumentParser) -> None:
    from node.state import DEFAULT_STATE_DIR

    parser.add_argument("--controller", help="the controller's join address HOST[:PORT]")
    parser.add_argument(
        "--token",
        help="join token lmj1.<id>.<secret>.<ca-pin> (visible in `ps`: prefer --token-file "
        "or $LISPMESH_TOKEN)",
    )
    parser.add_argument("--token-file", help="read the join token from this 0600 file")
    parser.add_argument("--name", help="node name wish (default: the host name)")
    parser.add_argument("--ca-cert", help="trust this controller CA instead of the token's pin")
    parser.add_argument("--onboarding-cert", help="device certificate (instead of a token)")
    parser.add_argument("--onboarding-key", help="its private key")
    parser.add_argument(
        "--tpm",
        default=os.environ.get("LISPMESH_TPM") or None,
        help="keep the node key in this TPM: a device (/dev/tpmrm0) or a TCTI "
        "(swtpm:port=2321); default $LISPMESH_TPM, else a 0600 key file",
    )
    parser.add_argument(
        "--workloads-dir",
        help="supervise the workloads in this state dir (as `lispmesh app --state-dir`), and "
        "run those the controller places here",
    )
    # Labs and tests with several nodes on one machine: their own runc ids, netns names, runc root.
    parser.add_argument("--workload-prefix", default="lm-", help=argparse.SUPPRESS)
    parser.add_argument("--workload-runc-root", help=argparse.SUPPRESS)
    parser.add_argument(
        "--event-log",
        default="/sys/kernel/security/tpm0/binary_bios_measurements",
        help="the measured-boot event log sent with TPM quotes (default: the kernel's)",
    )
    parser.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help=f"(default {DEFAULT_STATE_DIR})"
    )
    parser.add_argument("--log-level", help="debug, info, warning (default info)")


def _run_options(parser: argparse.ArgumentParser) -> None:
    run_dir = DEFAULT_RUN_DIR
    parser.add_argument("--run-dir", default=str(run_dir), help=f"control socket dir ({run_dir})")
    parser.add_argument("--uplink", action="append", help="uplink interface (repeatable; "
                        "default: every interface with a global address)")  # fmt: skip
    parser.add_argument("--tun", default="lm0", help="overlay TUN device (lm0)")
    parser.add_argument("--backoff-base", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--backoff-cap", type=float, default=30.0,
                        help="longest wait between retries, seconds (30)")  # fmt: skip
    parser.add_argument("--metrics-interval", type=float, default=30.0,
                        help="seconds between metrics reports (30)")  # fmt: skip
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve Prometheus /metrics there (off by default; a bare :PORT "
                        "is loopback only)")  # fmt: skip


def register(subparsers: Subparsers) -> None:
    _, sub = group(subparsers, "node", "run a lispmesh node and inspect it")

    join = sub.add_parser("join", help="enroll this machine with the controller (once)")
    _join_options(join)
    join.add_argument("--force", action="store_true", help="join again as a new node")
    join.set_defaults(handler=_join)

    run = sub.add_parser(
        "run",
        help="run a node: controller-managed (joins on first boot), or from --config FILE",
    )
    run.add_argument("--config", help="node config file (YAML): a node without a controller")
    _join_options(run)
    _run_options(run)
    run.set_defaults(handler=_run)

    ops.add_status(sub, "status", "this node's state (= lispmesh status)")
