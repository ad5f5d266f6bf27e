"""The workload lifecycle machine, in memory: actions out for events and `now` in."""

from __future__ import annotations

from node.workloads.lifecycle import Action, Desired, Lifecycle, Restart, State

A = Action


def _machine(**kw: object) -> Lifecycle:
    return Lifecycle("web", rand=lambda: 1.0, **kw)  # type: ignore[arg-type]


def _run_all(m: Lifecycle, actions: list[Action], now: float) -> list[Action]:
    """Perform every action successfully, in order; returns what was done."""
    done = []
    while actions:
        (action,) = actions
        done.append(action)
        actions = m.done(action, now)
    return done


def test_from_nothing_to_running_and_halted_and_back() -> None:
    m = _machine()
    first = m.want(Desired.RUNNING, 0)
    assert first == [A.VERIFY] and m.state == State.VERIFYING
    assert m.want(Desired.RUNNING, 0) == []  # one action in flight at a time
    assert m.done(A.VERIFY, 1) == [A.INSTALL] and m.state == State.AWAIT_NETWORK
    assert m.done(A.INSTALL, 2) == [A.START] and m.state == State.BOOTING
    assert m.done(A.START, 3) == [] and m.state == State.RUNNING and m.since == 3
    assert m.want(Desired.HALTED, 4) == [A.STOP] and m.state == State.HALTING
    assert m.done(A.STOP, 5) == [] and m.state == State.HALTED
    assert m.want(Desired.RUNNING, 6) == [A.START]
    assert m.done(A.START, 7) == [] and m.restarts == 0


def test_a_crash_restarts_after_a_growing_backoff_that_resets_once_stable() -> None:
    m = _machine(backoff_base=1, backoff_cap=4, stable_after=60)
    _run_all(m, m.want(Desired.RUNNING, 0), 0)
    waits = []
    now = 10.0
    for _ in range(4):
        assert m.exited(137, "killed by SIGKILL", now) == []
        assert m.state == State.BROKEN and m.last_error == "killed by SIGKILL"
        wake = m.wake_at
        assert wake is not None
        waits.append(wake - now)
        assert m.tick(wake - 0.01) == []
        assert m.tick(wake) == [A.START]
        now = wake
        assert m.done(A.START, now) == [] and m.state == State.RUNNING
    assert waits == [1, 2, 4, 4] and m.restarts == 4 and m.last_error == ""
    m.tick(now + 60)  # ran for a minute: the next crash waits the base again
    m.exited(1, "exit 1", now + 61)
    assert m.wake_at == now + 62


def test_restart_policies() -> None:
    never = _machine(restart=Restart.NEVER)
    _run_all(never, never.want(Desired.RUNNING, 0), 0)
    assert never.exited(1, "exit 1", 1) == [] and never.state == State.HALTED
    assert never.exit_code == 1 and never.tick(1000) == []
    on_failure = _machine(restart=Restart.ON_FAILURE)
    _run_all(on_failure, on_failure.want(Desired.RUNNING, 0), 0)
    on_failure.exited(0, "exit 0", 1)
    assert on_failure.state == State.HALTED
    on_failure.want(Desired.RUNNING, 2)
    on_failure.done(A.START, 2)
    on_failure.exited(3, "exit 3", 3)
    assert on_failure.state == State.BROKEN and on_failure.tick(10) == [A.START]


def test_a_bad_image_fails_for_good_and_can_still_be_removed() -> None:
    m = _machine()
    m.want(Desired.RUNNING, 0)
    assert m.failed(A.VERIFY, "layer 0: blob sha256:ab.. hashes to ..", 1) == []
    assert m.state == State.FAILED and m.last_error.startswith("verify: layer 0")
    assert m.tick(10_000) == []
    assert m.want(Desired.ABSENT, 2) == [A.DELETE]
    assert m.done(A.DELETE, 3) == [] and m.state == State.DELETED


def test_a_failed_step_is_retried_after_backoff_and_a_failed_stop_destroys() -> None:
    m = _machine()
    m.want(Desired.RUNNING, 0)
    m.done(A.VERIFY, 0)
    assert m.failed(A.INSTALL, "veth exists", 1) == [] and m.state == State.BROKEN
    assert m.tick(2) == [A.INSTALL]
    _run_all(m, m.done(A.INSTALL, 2), 2)
    assert m.state == State.RUNNING and m.restarts == 0
    assert m.want(Desired.HALTED, 3) == [A.STOP]
    assert m.failed(A.STOP, "timeout", 4) == [A.DESTROY] and m.state == State.HALTING
    assert m.done(A.DESTROY, 5) == [] and m.state == State.HALTED


def test_purge_rebuilds_and_remove_stops_first() -> None:
    m = _machine()
    _run_all(m, m.want(Desired.RUNNING, 0), 0)
    assert _run_all(m, m.purge(1), 1) == [A.STOP, A.DELETE, A.VERIFY, A.INSTALL, A.START]
    assert m.state == State.RUNNING and m.purges == 1
    assert _run_all(m, m.want(Desired.ABSENT, 2), 2) == [A.STOP, A.DELETE]
    assert m.state == State.DELETED


def test_a_new_desire_waits_for_the_step_in_flight_and_stale_reports_are_ignored() -> None:
    m = _machine()
    m.want(Desired.RUNNING, 0)
    assert m.want(Desired.ABSENT, 1) == []
    assert m.done(A.START, 1) == []  # not in flight: ignored
    assert m.done(A.VERIFY, 2) == [A.DELETE]
    broken = _machine()
    _run_all(broken, broken.want(Desired.RUNNING, 0), 0)
    broken.exited(1, "exit 1", 1)
    assert broken.want(Desired.HALTED, 1.5) == [] and broken.state == State.HALTED


def test_a_restored_machine_re_adopts_from_what_the_runtime_says() -> None:
    m = _machine()
    _run_all(m, m.want(Desired.RUNNING, 0), 0)
    m.exited(9, "killed", 1)
    m.tick(2)
    m.done(A.START, 2)
    saved = m.checkpoint()
    running = Lifecycle.restore(saved, 100)
    assert running.state == State.RUNNING and running.restarts == 1
    assert running.observed("running", 100) == [] and running.state == State.RUNNING
    dead = Lifecycle.restore(saved, 100, rand=lambda: 1.0)
    assert dead.observed("stopped", 100) == [] and dead.state == State.BROKEN
    assert dead.wake_at == 102  # the second crash in a row: twice the base
    assert dead.tick(102) == [A.START]
    gone = Lifecycle.restore(saved, 100)
    assert gone.observed("absent", 100) == [A.INSTALL]
    m.want(Desired.HALTED, 3)  # the agent died while stopping it
    mid_stop = Lifecycle.restore(m.checkpoint(), 100)
    assert mid_stop.state == State.RUNNING and mid_stop.pending is None
    assert mid_stop.observed("running", 100) == [A.STOP]
    assert mid_stop.status()["desired"] == "halted"
