"""Atomic writes: a file appears whole under its final name or not at all."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file is in the same folder, so the rename is atomic, and is removed on
    any error or interrupt (KeyboardInterrupt included).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.with_name(f".{stem}.{os.getpid()}.partial{suffix}")
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json_atomic(target: Path, content: dict) -> Path:
    return write_text_atomic(
        target, json.dumps(content, indent=2, sort_keys=True, default=str) + "\n"
    )


def copy_atomic(source: Path, target: Path) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


@contextmanager
def staged_tree(output_dir: Path, names: tuple[str, ...], tag: str) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``output_dir``; on success, swap each of ``names``
    (files or folders) from it into ``output_dir`` together, replacing the previous ones.

    On any error before or during the swap the previous outputs are put back as they were
    and nothing of the new ones is left behind.
    """
    output_dir = Path(output_dir)
    staging = output_dir / f".{tag}.{os.getpid()}.partial"
    previous = output_dir / f".{tag}.{os.getpid()}.partial-previous"
    for folder in (staging, previous):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        previous.mkdir()
        moved_away, placed = [], []
        try:
            for name in names:
                if (output_dir / name).exists():
                    (output_dir / name).rename(previous / name)
                    moved_away.append(name)
            for name in names:
                if (staging / name).exists():
                    (staging / name).rename(output_dir / name)
                    placed.append(name)
        except BaseException:
            for name in placed:
                (output_dir / name).rename(staging / name)
            for name in moved_away:
                (previous / name).rename(output_dir / name)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
