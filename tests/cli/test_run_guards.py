"""No traceback on the console at either level; unusable output refused before any work; group
outputs replaced whole or not at all (a failed run, a full disk)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_brainage.cli import group as group_module
from bids_brainage.cli import run as run_module
from bids_brainage.cli.run import main
from bids_brainage.synthetic.predictions import make_prediction_derivatives
from bids_brainage.utils.guards import EXIT_CANNOT_WRITE, EXIT_INTERNAL, EXIT_NO_SPACE
from tests.conftest import tree_digest


def _group(data, work, *extra):
    return main([str(data["bids"]), str(data["derivatives"]), "group", "-w", str(work), *extra])


def _group_outputs_digest(out: Path) -> str:
    page = (out / "group.html").read_bytes() if (out / "group.html").exists() else b""
    return tree_digest(out / "group") + str(hash(page))


def _console_errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "[INFO]" not in line]


@pytest.fixture
def grouped(tmp_path):
    """Derivatives with a finished group level already in place."""
    data = make_prediction_derivatives(tmp_path, 12, 6, n_rescans=0, seed=21)
    assert _group(data, tmp_path / "work") == 0
    return data


@pytest.mark.parametrize("where", ["analyse", "write_group_report"])
def test_internal_error_is_one_line_and_leaves_the_previous_group_outputs(
    grouped, tmp_path, capsys, monkeypatch, where
):
    out = grouped["derivatives"]
    before = _group_outputs_digest(out)
    capsys.readouterr()

    def broken(*args, **kwargs):
        raise RuntimeError("planted bug\nsecond line")

    monkeypatch.setattr(group_module, where, broken)
    assert _group(grouped, tmp_path / "work") == EXIT_INTERNAL
    errors = _console_errors(capsys)
    assert len(errors) == 1 and "internal error (RuntimeError: planted bug)" in errors[0]
    crash = Path(errors[0].split("traceback in ")[1].split(";")[0])
    assert crash.parent == out / "logs" and crash.name.endswith("-group.txt")
    assert "Traceback" in crash.read_text() and "planted bug" in crash.read_text()
    assert _group_outputs_digest(out) == before
    assert not list(out.glob(".group*"))
    assert (out / "dataset_description.json").is_file()


def test_participant_level_internal_error_is_one_line(tmp_path, capsys, monkeypatch):
    data = make_prediction_derivatives(tmp_path, 2, 0, n_rescans=0, seed=21)

    def broken(config):
        raise KeyError("planted")

    monkeypatch.setattr(run_module, "run_participant", broken)
    code = main([str(data["bids"]), str(tmp_path / "out"), "participant", "-w",
                 str(tmp_path / "work")])  # fmt:skip
    assert code == EXIT_INTERNAL
    errors = _console_errors(capsys)
    assert len(errors) == 1 and "KeyError" in errors[0]
    assert list((tmp_path / "out" / "logs").glob("crash-*-participant.txt"))


def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    data = make_prediction_derivatives(tmp_path, 2, 0, n_rescans=0, seed=21)
    target = tmp_path / "out.txt"
    target.write_text("not a folder")
    code = main([str(data["bids"]), str(target), "participant", "-w", str(tmp_path / "w")])
    assert code == 64
    errors = _console_errors(capsys)
    assert len(errors) == 1 and str(target) in errors[0] and "is a file" in errors[0]
    assert target.read_text() == "not a folder"


def _without_override(argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI unable to write where its user may not (root loses its capabilities, as a
    container's uid 1000 meets a root-owned folder)."""
    code = "import sys; from bids_brainage.cli.run import main; sys.exit(main(sys.argv[1:]))"
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip(
                "running as root without setpriv (util-linux): nothing can take away "
                "root's right to write anywhere, so an unwritable folder cannot be made"
            )
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    return subprocess.run([*prefix, sys.executable, "-c", code, *argv], capture_output=True,
                          text=True, timeout=300)  # fmt:skip


@pytest.mark.parametrize("unwritable", ["output", "work"])
def test_unwritable_folder_is_refused_before_any_work(tmp_path, unwritable):
    data = make_prediction_derivatives(tmp_path, 2, 0, n_rescans=0, seed=21)
    locked, free = tmp_path / "locked", tmp_path / "free"
    locked.mkdir()
    free.mkdir()
    locked.chmod(0o555)
    try:
        out, work = (locked / "out", free / "w") if unwritable == "output" else \
            (free / "out", locked / "w")  # fmt:skip
        result = _without_override([str(data["bids"]), str(out), "participant", "-w",
                                    str(work)])  # fmt:skip
        assert result.returncode == EXIT_CANNOT_WRITE, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert "cannot write to" in lines[0] and "--user $(id -u):$(id -g)" in lines[0]
        assert str(out if unwritable == "output" else work) in lines[0]
        assert not out.exists() or not any(out.iterdir())
    finally:
        locked.chmod(0o755)


def _mount_small_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt:skip
    return done.returncode == 0


def test_disk_full_during_group_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys):
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_small_tmpfs(disk, "16m"):
        pytest.skip(
            "a full disk is simulated with a 16 MB tmpfs, which only root with mount "
            "rights can create"
        )
    try:
        data = make_prediction_derivatives(disk, 12, 6, n_rescans=0, seed=21)
        used = shutil.disk_usage(disk).used
        # room for the tables, not for the report's figures
        subprocess.run(["mount", "-o", f"remount,size={used + 96 * 1024}", str(disk)],
                       check=True)  # fmt:skip
        capsys.readouterr()
        assert _group(data, tmp_path / "work") == EXIT_NO_SPACE
        errors = _console_errors(capsys)
        assert len(errors) == 1 and "no space left on the device" in errors[0], errors
        out = data["derivatives"]
        assert not (out / "group").exists() and not (out / "group.html").exists()
        assert not list(out.glob(".group*")) and not list(out.rglob("*.partial*"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
