"""The lifecycle of one workload, sans-IO: events and `now` in, actions out (EVE's SwState).

    INITIAL -VERIFY-> VERIFYING -> LOADED -INSTALL-> AWAIT_NETWORK -> INSTALLED -START-> BOOTING
      -> RUNNING -STOP-> HALTING -> HALTED            (the names EVE's controller knows)
    BROKEN   it died or a step failed; retried after a backoff (the reason is kept)
    FAILED   its image is bad: nothing to retry until it is replaced
    DELETED  removed from the runtime and the node

The driver (node/workloads/supervisor.py) performs each action and reports `done` or `failed`;
one action is in flight at a time, and what happens next depends only on the state, what the
workload should be doing (`desired`: running, halted or absent) and the clock it is given. Every
transition is in `_done`, `_failed`, `_exited` and `_plan` below. A crashed workload restarts after
an exponential backoff (node.backoff, capped) that resets once it has run for `stable_after`
seconds; `restarts` and `purges` count what EVE's controller shows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node.backoff import Backoff


class State(StrEnum):
    INITIAL = "INITIAL"
    VERIFYING = "VERIFYING"
    LOADED = "LOADED"
    AWAIT_NETWORK = "AWAIT_NETWORK"
    INSTALLED = "INSTALLED"
    BOOTING = "BOOTING"
    RUNNING = "RUNNING"
    HALTING = "HALTING"
    HALTED = "HALTED"
    BROKEN = "BROKEN"
    FAILED = "FAILED"
    DELETED = "DELETED"


class Action(StrEnum):
    VERIFY = "verify"  # blobs verified, rootfs unpacked / disk prepared
    INSTALL = "install"  # network attached (veth or tap, EID), defined in the runtime
    START = "start"
    STOP = "stop"  # graceful, then forced after the stop timeout (the runtime's job)
    DESTROY = "destroy"  # forced, when a stop failed
    DELETE = "delete"  # out of the runtime, network detached, rootfs removed


class Desired(StrEnum):
    RUNNING = "running"
    HALTED = "halted"
    ABSENT = "absent"


class Restart(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


# The state an action puts the workload in while it runs, and the one it leaves it in.
_WHILE = {Action.VERIFY: State.VERIFYING, Action.INSTALL: State.AWAIT_NETWORK,
          Action.START: State.BOOTING, Action.STOP: State.HALTING,
          Action.DESTROY: State.HALTING}  # fmt: skip
_AFTER = {Action.VERIFY: State.LOADED, Action.INSTALL: State.INSTALLED,
          Action.START: State.RUNNING, Action.STOP: State.HALTED, Action.DESTROY: State.HALTED,
          Action.DELETE: State.DELETED}  # fmt: skip
# States in which the workload exists in its runtime (so removing it needs DELETE).
_DEFINED = {State.INSTALLED, State.RUNNING, State.HALTED, State.BROKEN}


@dataclass
class Lifecycle:
    name: str
    restart: Restart = Restart.ALWAYS
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    stable_after: float = 60.0
    rand: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self.state = State.INITIAL
        self.desired = Desired.HALTED
        self.pending: Action | None = None
        self.since = 0.0  # when the current state began
        self.wake_at: float | None = None  # when a BROKEN workload is retried
        self.retry: Action | None = None  # what is retried then
        self.last_error = ""
        self.exit_code: int | None = None
        self.restarts = 0
        self.purges = 0
        self.purging = False
        self._backoff = Backoff(self.backoff_base, self.backoff_cap, self.rand)

    # -- inputs ------------------------------------------------------------------------------

    def want(self, desired: Desired, now: float) -> list[Action]:
        self.desired = desired
        return self._plan(now)

    def purge(self, now: float) -> list[Action]:
        """Rebuild from the image (EVE's purge): delete, verify and install again, start."""
        if self.state not in (State.INITIAL, State.DELETED):
            self.purging = True
        self.desired = Desired.RUNNING
        return self._plan(now)

    def done(self, action: Action, now: float) -> list[Action]:
        if action != self.pending:
            return []  # a stale report (the agent restarted in between): nothing in flight
        self.pending = None
        if action == Action.START and self.retry == Action.START:
            self.restarts += 1
        self.retry = None
        state = _AFTER[action]
        if action == Action.DELETE and self.purging:
            self.purging = False
            self.purges += 1
            state = State.INITIAL
        self._enter(state, now)
        if state == State.RUNNING:
            self.last_error = ""  # the exit code stays: how it last exited (a crash loop's why)
        return self._plan(now)

    def failed(self, action: Action, reason: str, now: float) -> list[Action]:
        if action != self.pending:
            return []
        self.pending = None
        self.last_error = f"{action}: {reason}"
        if action == Action.VERIFY:
            self._enter(State.FAILED, now)  # a bad image stays bad
            return self._plan(now)
        if action == Action.STOP:
            return self._issue(Action.DESTROY, now)
        self._broken(action, now)
        return self._plan(now)

    def exited(self, code: int | None, reason: str, now: float) -> list[Action]:
        """The workload stopped by itself (container exit, VM crash or guest poweroff)."""
        if self.pending is not None or self.state != State.RUNNING:
            return []  # a stop we asked for, or already known
        self.exit_code = code
        if (
            self.desired != Desired.RUNNING
            or self.restart == Restart.NEVER
            or (self.restart == Restart.ON_FAILURE and code == 0)
        ):
            # It finished and its policy says leave it: halted until told to run again.
            self.desired = Desired.HALTED
            self._enter(State.HALTED, now)
            return self._plan(now)
        self.last_error = reason
        self._broken(Action.START, now)
        return self._plan(now)

    def observed(
        self, runtime_state: str, now: float, exit_code: int | None = None
    ) -> list[Action]:
        """What the runtime says (`running`, `stopped`, `absent`; the exit code if it knows it),
        e.g. when re-adopting."""
        if self.pending is not None:
            return []
        if runtime_state == "running" and self.state in _DEFINED:
            if self.state != State.RUNNING:
                self._enter(State.RUNNING, now)
                self.wake_at = self.retry = None
            return self._plan(now)
        if runtime_state == "stopped" and self.state == State.RUNNING:
            why = "stopped (seen by the agent)" if exit_code is None else f"exited with {exit_code}"
            return self.exited(exit_code, why, now)
        if runtime_state == "absent" and self.state in _DEFINED:
            self._enter(State.LOADED, now)  # the runtime lost it: install again
            self.wake_at = self.retry = None
        return self._plan(now)

    def tick(self, now: float) -> list[Action]:
        if self.state == State.RUNNING and now - self.since >= self.stable_after:
            self._backoff.reset()
        return self._plan(now)

    # -- the plan ----------------------------------------------------------------------------

    def _plan(self, now: float) -> list[Action]:
        """The next action toward `desired` (none while one is in flight)."""
        if self.pending is not None:
            return []
        state, desired = self.state, self.desired
        if state == State.BROKEN and self.wake_at is not None and now < self.wake_at:
            if desired == Desired.RUNNING:
                return []
            self.wake_at = self.retry = None  # no point retrying what is no longer wanted
        if desired == Desired.ABSENT or self.purging:
            if state == State.RUNNING:
                return self._issue(Action.STOP, now)
            if state in (State.DELETED, State.INITIAL) and not self.purging:
                if state == State.INITIAL:
                    self._enter(State.DELETED, now)
                return []
            return self._issue(Action.DELETE, now)
        if desired == Desired.HALTED:
            if state == State.RUNNING:
                return self._issue(Action.STOP, now)
            if state == State.BROKEN:
                self._enter(State.HALTED, now)
            return []
        step = {
            State.INITIAL: Action.VERIFY, State.LOADED: Action.INSTALL,
            State.INSTALLED: Action.START, State.HALTED: Action.START,
            State.BROKEN: self.retry or Action.START, State.DELETED: Action.VERIFY,
        }.get(state)  # fmt: skip
        return self._issue(step, now) if step else []

    def _issue(self, action: Action, now: float) -> list[Action]:
        self.pending = action
        if action in _WHILE:
            self._enter(_WHILE[action], now)
        self.wake_at = None
        return [action]

    def _broken(self, retry: Action, now: float) -> None:
        self._enter(State.BROKEN, now)
        self.retry = retry
        self.wake_at = now + self._backoff.next()

    def _enter(self, state: State, now: float) -> None:
        if state != self.state:
            self.state = state
            self.since = now

    # -- checkpoint and status ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": str(self.state), "desired": str(self.desired),
            "since": self.since, "restarts": self.restarts, "purges": self.purges,
            "last_error": self.last_error, "exit_code": self.exit_code,
            "retry_at": self.wake_at, "pending": str(self.pending) if self.pending else None,
        }  # fmt: skip

    def checkpoint(self) -> dict[str, Any]:
        return {
            **self.status(), "retry": self.retry, "purging": self.purging,
            "backoff_attempts": self._backoff.attempts, "restart": str(self.restart),
        }  # fmt: skip

    @classmethod
    def restore(cls, doc: dict[str, Any], now: float, **kw: Any) -> Lifecycle:
        """From a checkpoint. An action in flight when the agent died is forgotten: the
        runtime's own state (`observed`) says where it got to."""
        machine = cls(str(doc["name"]), restart=Restart(doc.get("restart", "always")), **kw)
        machine.state = State(doc["state"])
        if machine.pending is None and machine.state in _WHILE.values():
            machine.state = {State.VERIFYING: State.INITIAL, State.AWAIT_NETWORK: State.LOADED,
                             State.BOOTING: State.INSTALLED, State.HALTING: State.RUNNING}[
                machine.state]  # fmt: skip
        machine.desired = Desired(doc["desired"])
        machine.since = float(doc.get("since", now))
        machine.restarts = int(doc.get("restarts", 0))
        machine.purges = int(doc.get("purges", 0))
        machine.last_error = str(doc.get("last_error", ""))
        code = doc.get("exit_code")
        machine.exit_code = int(code) if code is not None else None
        machine.purging = bool(doc.get("purging", False))
        machine._backoff.attempts = int(doc.get("backoff_attempts", 0))
        if machine.state == State.BROKEN:
            machine.retry = Action(doc["retry"]) if doc.get("retry") else Action.START
            machine.wake_at = now  # retry as soon as the agent is back
        return machine
