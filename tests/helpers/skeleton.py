"""Fake BIDS trees of empty files: enough to index and build graphs, not to run them."""

from __future__ import annotations

from pathlib import Path


def make_skeleton(root: Path, files: list[str], participants: str | None = None) -> Path:
    """Write ``dataset_description.json``, empty ``files`` and an optional participants.tsv."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    if participants is not None:
        (root / "participants.tsv").write_text(participants)
    return root
