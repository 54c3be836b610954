"""Shared fixtures: no network, a seeded rng, synthetic datasets made once per session."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ixi-hh-2mm"

# ITK reads its thread count once, when it first runs in a process; tests that call ANTs in the
# pytest process itself (before a run's own limit is set) must not leave it multi-threaded, or
# later in-process runs lose their byte-for-byte reproducibility (threaded sums).
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path_factory):
    """Any attempt to open a network connection fails the test (nilearn's habit)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home / "templateflow"))


@pytest.fixture
def rng():
    return np.random.default_rng(20181209)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Four participants on three sites (RAS uint8 2 mm; LPS int16 2.4 mm; PSR float32
    1.8 x 1.8 x 3 mm tilted 8 degrees), one rescan, one patient."""
    from bids_brainage.synthetic.acquisition import DEFAULT_SITES
    from bids_brainage.synthetic.dataset import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    truth = make_dataset(
        root, n_subjects=4, n_patients=1, n_rescans=1, seed=1, sites=DEFAULT_SITES
    )
    return root / "bids", truth


@pytest.fixture(scope="session")
def bad_kit(tmp_path_factory):
    from tests.helpers.badkit import make_bad_input_kit

    root = tmp_path_factory.mktemp("badkit")
    expected = make_bad_input_kit(root)
    return root / "bids", expected


@pytest.fixture(scope="session")
def ixi_dir():
    if not (SHARED_DATA / "participants.tsv").exists():
        pytest.skip(f"real IXI data not present at {SHARED_DATA}")
    return SHARED_DATA


def tree_digest(folder: Path) -> str:
    """A digest of every path, size and content under ``folder`` (to prove it is untouched)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
        elif path.is_symlink():
            digest.update(str(path.readlink()).encode())
    return digest.hexdigest()


def relative_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    )


@pytest.fixture(scope="session")
def feature_dataset(tmp_path_factory):
    """Participant-level features of 40 synthetic brains (6 mm grid, sites A and B, ages
    20-80) written directly, with no preprocessing: for training every model kind quickly."""
    from tests.helpers.features import make_feature_derivatives

    return make_feature_derivatives(tmp_path_factory.mktemp("features"), 40, seed=1)
