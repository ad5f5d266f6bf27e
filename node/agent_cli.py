"""`lispmesh node join` and the controller-managed `lispmesh node run` (no --config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from node.state import DEFAULT_STATE_DIR, Enrollment, StateDir, StateError

log = logging.getLogger("lispmesh.agent")
EXIT_REFUSED = 78  # as for a revoked node: restarting cannot help


def _fail(message: str, code: int = 1) -> Exception:
    from lispmesh.errors import CliError

    return CliError(message, code)


def _logging(args: argparse.Namespace, name: str) -> None:
    level = getattr(logging, (args.log_level or "info").upper(), logging.INFO)
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _onboarding(args: argparse.Namespace) -> object | None:
    from node.enroll import Onboarding

    if not args.onboarding_cert:
        return None
    if not args.onboarding_key:
        raise _fail("--onboarding-cert needs --onboarding-key")
    return Onboarding(Path(args.onboarding_cert), Path(args.onboarding_key))


def _enroll_once(args: argparse.Namespace, state: StateDir) -> Enrollment:
    from node.enroll import Onboarding, enroll

    onboarding = _onboarding(args)
    assert onboarding is None or isinstance(onboarding, Onboarding)
    return enroll(
        state,
        args.controller,
        token=args.token,
        onboarding=onboarding,
        name=args.name,
        ca_cert=Path(args.ca_cert) if args.ca_cert else None,
    )


def _print_joined(enrollment: Enrollment) -> None:
    print(
        f"joined as {enrollment.name} ({enrollment.node_id}): EIDs "
        f"{', '.join(enrollment.eid_prefixes)}, controller API {enrollment.api_address}"
    )


def join(args: argparse.Namespace) -> int:
    from node.enroll import EnrollError

    if not args.controller:
        raise _fail("--controller is required")
    state = StateDir(Path(args.state_dir))
    if state.enrolled() and state.revoked_message() is None and not args.force:
        enrollment = state.load_enrollment()
        raise _fail(
            f"already enrolled as {enrollment.name} ({enrollment.node_id}) in {state.path} "
            "(--force to join again as a new node)"
        )
    try:
        enrollment = _enroll_once(args, state)
    except EnrollError as exc:
        raise _fail(str(exc), 1 if exc.retry else EXIT_REFUSED) from None
    except StateError as exc:
        raise _fail(str(exc)) from None
    _print_joined(enrollment)
    return 0


def _join_on_boot(args: argparse.Namespace, state: StateDir) -> Enrollment:
    """Enroll, retrying while the controller cannot be reached (it may boot after us)."""
    from node.backoff import Backoff
    from node.enroll import EnrollError

    if not args.controller or not (args.token or args.onboarding_cert):
        raise _fail(
            f"this node is not enrolled yet ({state.path}): give --controller and --token "
            "(or run `lispmesh node join` first)"
        )
    backoff = Backoff(args.backoff_base, args.backoff_cap)
    while True:
        try:
            enrollment = _enroll_once(args, state)
        except EnrollError as exc:
            if not exc.retry:
                raise _fail(str(exc), EXIT_REFUSED) from None
            delay = backoff.next()
            log.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            continue
        log.info(
            "joined as %s (%s): EIDs %s",
            enrollment.name, enrollment.node_id, ", ".join(enrollment.eid_prefixes),
        )  # fmt: skip
        return enrollment


def run_managed(args: argparse.Namespace) -> int:
    from node.agent import Agent, AgentOptions

    state = StateDir(Path(args.state_dir))
    _logging(args, "agent")
    try:
        state.prepare()
        revoked = state.revoked_message()
        if revoked is not None and not args.token:
            raise _fail(f"{revoked} (join again with a new token)", EXIT_REFUSED)
        if state.enrolled() and revoked is None:
            enrollment = state.load_enrollment()
            if args.token:
                log.info("already enrolled as %s: --token not needed", enrollment.name)
        else:
            enrollment = _join_on_boot(args, state)
    except StateError as exc:
        raise _fail(str(exc)) from None
    options = AgentOptions(
        state_dir=state.path,
        run_dir=Path(args.run_dir),
        tun=args.tun,
        uplinks=tuple(args.uplink or ()),
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        metrics_interval=args.metrics_interval,
    )
    code = asyncio.run(Agent(state, enrollment, options).run())
    if code:
        raise _fail(state.revoked_message() or "the node agent stopped", code)
    return 0


def add_join_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", help="the controller's join address HOST[:PORT]")
    parser.add_argument("--token", help="join token lmj1.<id>.<secret>.<ca-pin>")
    parser.add_argument("--name", help="node name wish (default: the host name)")
    parser.add_argument("--ca-cert", help="trust this controller CA instead of the token's pin")
    parser.add_argument("--onboarding-cert", help="device certificate (instead of a token)")
    parser.add_argument("--onboarding-key", help="its private key")
    parser.add_argument(
        "--state-dir", default=str(DEFAULT_STATE_DIR), help=f"(default {DEFAULT_STATE_DIR})"
    )
    parser.add_argument("--log-level", help="debug, info, warning (default info)")


def add_run_options(parser: argparse.ArgumentParser, run_dir: Path) -> None:
    parser.add_argument("--run-dir", default=str(run_dir), help=f"control socket dir ({run_dir})")
    parser.add_argument("--uplink", action="append", help="uplink interface (repeatable; "
                        "default: every interface with a global address)")  # fmt: skip
    parser.add_argument("--tun", default="lm0", help="overlay TUN device (lm0)")
    parser.add_argument("--backoff-base", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--backoff-cap", type=float, default=30.0,
                        help="longest wait between retries, seconds (30)")  # fmt: skip
    parser.add_argument("--metrics-interval", type=float, default=30.0,
                        help="seconds between metrics reports (30)")  # fmt: skip
