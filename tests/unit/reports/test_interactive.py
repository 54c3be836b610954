"""The group report's sortable scan table and hover scatter, on an in-memory scan table."""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from bids_brainage.reports.interactive import age_scatter_svg, scan_stem, scans_table

MODEL = "ixi-tissue-linear"


def scans():
    return pd.DataFrame({
        "participant_id": ["sub-01", "sub-01", "sub-02", "sub-03"],
        "session_id": ["ses-1", "ses-2", np.nan, np.nan],
        "acquisition": [np.nan, np.nan, "mprage", np.nan], "run": [np.nan, np.nan, np.nan, "2"],
        "site": ["A", "A", "B", "B"], "group": ["HC", "HC", "PT", np.nan],
        "age": [30.0, 30.0, 71.5, np.nan],
        f"{MODEL}_predicted_age": [33.25, 32.75, 80.0, 50.0],
        f"{MODEL}_brain_pad_corrected": [1.5, 1.0, 7.125, np.nan],
        "qc_flags": [np.nan, np.nan, "oblique", np.nan], "excluded": [np.nan] * 4,
    })  # fmt:skip


def test_scan_stems_follow_the_file_names():
    stems = [scan_stem(row) for _, row in scans().iterrows()]
    assert stems == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_acq-mprage", "sub-03_run-2"]


def test_scan_table_links_every_scan_to_its_subject_report_section():
    page = scans_table(scans(), [MODEL])
    assert page.startswith('<table class="sortable">')
    assert page.count("<tr>") == 1 + 4  # header and one row per scan
    assert '<a href="sub-01.html#sub-01_ses-2">sub-01_ses-2</a>' in page
    assert '<a href="sub-02.html#sub-02_acq-mprage">' in page
    assert "<td>80.00</td>" in page and "<td>oblique</td>" in page and "<td>n/a</td>" in page


def test_scatter_has_one_named_point_per_scan_with_an_age():
    svg = age_scatter_svg(scans(), MODEL)
    root = ET.fromstring(svg)  # well-formed XML, no script, no external reference
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert len(titles) == 3  # sub-03 has no age: not placed
    assert titles[2] == "sub-02_acq-mprage (PT): age 71.5, predicted 80.0, brain-PAD +8.5 y"
    assert "http" not in re.sub(r'xmlns="[^"]+"', "", svg)


def test_scatter_is_empty_without_ages():
    table = scans().assign(age=np.nan)
    assert age_scatter_svg(table, MODEL) == ""
