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
    assert out.getvalue() == ""  # sub-1 has a node left; sub-11's node is not sub-1's
    progress(one[1], "end")
    progress(eleven, "exception")
    progress(eleven, "end")  # nothing more once a scan has failed
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[1/3] sub-1: done in ") and "brain age 40.0 y" in lines[0]
    assert "left" in lines[0]
    assert lines[1].startswith("[2/3] sub-11: FAILED at a")


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
