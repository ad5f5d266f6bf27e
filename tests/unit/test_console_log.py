"""Reading a workload's console log (node/workloads/console_log.py): the end by lines within a
byte budget (never half a line), and following it as it grows or starts over."""

from __future__ import annotations

from pathlib import Path

from node.workloads.console_log import Follower, tail


def test_tail_gives_whole_lines_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert tail(log) == ("", 0)  # not written yet
    log.write_bytes(b"one\ntwo\nthree\nfour\n")
    assert tail(log, 2) == ("three\nfour\n", 19)
    assert tail(log, 0)[0] == ""
    assert tail(log, None, max_bytes=8)[0] == "four\n"  # "e\n" of three was cut: dropped
    assert tail(log, 10)[0] == "one\ntwo\nthree\nfour\n"


def test_a_follower_reads_what_is_appended_and_a_log_started_over(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("old\n")
    follower = Follower(log, tail(log)[1])
    assert follower.read() == ""
    with log.open("a") as out:
        out.write("new\npart")
    assert follower.read() == "new\n"  # the unfinished line waits for its end
    with log.open("a") as out:
        out.write("ial\n")
    assert follower.read() == "partial\n"
    log.write_text("again\n")  # re-created: shorter than what was read
    assert follower.read() == "again\n"
