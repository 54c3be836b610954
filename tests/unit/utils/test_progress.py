"""The participant level's [k/N] lines, driven by fake Nipype nodes."""

import io
from types import SimpleNamespace

from bids_brainage.utils.progress import ScanProgress, format_seconds


def node(name, hierarchy):
    return SimpleNamespace(name=name, fullname=f"{hierarchy}.{name}")


def test_a_line_per_scan_when_its_last_node_ends_and_failures_at_once():
    scans = {"sub_1_wf.t1w_wf.": "sub-1", "sub_11_wf.t1w_wf.": "sub-11",
             "sub_2_wf.t1w_wf.": "sub-2"}  # fmt:skip
    expected = dict.fromkeys(scans, 2)
    out = io.StringIO()
    progress = ScanProgress(
        scans,
        expected,
        stream=out,
        describe=lambda n: "brain age 40.0 y" if n.name == "b" else None,
    )
    one = [
        node("a", "bids_brainage_wf.sub_1_wf.t1w_wf"),
        node("b", "bids_brainage_wf.sub_1_wf.t1w_wf"),
    ]
    eleven = node("a", "bids_brainage_wf.sub_11_wf.t1w_wf.anat_wf")
    for n in one:
        progress(n, "start")
    progress(eleven, "start")
    progress(one[0], "end")
    # sub-1 has a node left (sub-11's node is not sub-1's): only the share of steps, 1 of 6
    assert out.getvalue().startswith("[0/3] 10 % of the steps ended; about ")
    progress(one[1], "end")
    progress(eleven, "exception")
    progress(eleven, "end")  # nothing more once a scan has failed
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("[1/3] sub-1: done in ") and "brain age 40.0 y" in lines[1]
    assert "left" in lines[1]
    assert lines[2].startswith("[2/3] sub-11: FAILED at a")
    assert progress.nodes_total == 4  # sub-11's unrun nodes no longer count


def test_time_left_follows_the_steps_when_scans_finish_together(monkeypatch):
    """MultiProc runs every scan's first step, then every second one: all scans finish at the
    end, and the time left must come from the steps ended (it said 104 h for a 46 min run).
    """
    clock = [0.0]
    monkeypatch.setattr("bids_brainage.utils.progress.time.monotonic", lambda: clock[0])
    scans = {f"sub_{i}_wf.t1w_wf.": f"sub-{i}" for i in range(10)}
    out = io.StringIO()
    progress = ScanProgress(scans, dict.fromkeys(scans, 2), stream=out)
    for step in ("a", "b"):
        for i in range(10):
            clock[0] += 6.0  # every step takes 6 s
            progress(node(step, f"bids_brainage_wf.sub_{i}_wf.t1w_wf"), "end")
    lines = out.getvalue().splitlines()
    # 10 % .. 40 % of the steps: one line each, with the time the remaining steps will take
    assert lines[0] == "[0/10] 10 % of the steps ended; about 2 min left"
    assert lines[3] == "[0/10] 40 % of the steps ended; about 72 s left"
    assert lines[4] == "[0/10] 50 % of the steps ended; about 60 s left"
    assert lines[5].startswith("[1/10] sub-0: done in ") and lines[5].endswith("about 54 s left")
    assert lines[-1].startswith("[10/10] sub-9: done in ") and "left" not in lines[-1]
    assert len(lines) == 15


def test_quiet_prints_nothing():
    out = io.StringIO()
    progress = ScanProgress({"s_wf.": "sub-s"}, {"s_wf.": 1}, stream=out, quiet=True)
    progress(node("a", "w.s_wf"), "start")
    progress(node("a", "w.s_wf"), "end")
    assert out.getvalue() == "" and progress.finished == {"s_wf."}


def test_format_seconds():
    assert format_seconds(42) == "42 s"
    assert format_seconds(150) == "3 min"
    assert format_seconds(3900) == "1 h 05 min"
