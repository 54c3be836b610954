"""Container recipes and the Boutiques descriptor: linted with their own tools, and in step with
the command line. No image is built here (there is no Docker engine)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_brainage import __version__
from bids_brainage.cli import parser as cli
from bids_brainage.utils import guards as safety

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name):
    path = shutil.which(name) or (BIN / name if (BIN / name).exists() else None)
    if path is None:
        pytest.fail(
            f"{name} is not installed; it comes with the test extras (pip install .[test])"
        )
    return str(path)


def test_descriptor_validates_with_bosh():
    proc = subprocess.run([tool("bosh"), "validate", str(ROOT / "bids_app_spec.json")],
                          capture_output=True, text=True)  # fmt:skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_descriptor_matches_the_parser():
    descriptor = json.loads((ROOT / "bids_app_spec.json").read_text())
    assert descriptor["tool-version"] == __version__
    assert descriptor["container-image"]["image"] == f"bids_brainage:{__version__}"
    codes = {e["code"] for e in descriptor["error-codes"]}
    assert codes == {cli.EXIT_FAILED, cli.EXIT_INVALID_BIDS, cli.EXIT_UNKNOWN_LEVEL,
                     cli.EXIT_NO_MATCH, cli.EXIT_USAGE, safety.EXIT_INTERNAL,
                     safety.EXIT_CANNOT_WRITE, safety.EXIT_NO_SPACE}  # fmt:skip
    parser_flags = {
        opt for action in cli.build_parser()._actions for opt in action.option_strings
    } - {"-h", "--help", "--version"}
    descriptor_flags = {
        i["command-line-flag"] for i in descriptor["inputs"] if "command-line-flag" in i
    }
    assert descriptor_flags <= parser_flags
    # every parser option has at least one spelling in the descriptor
    for action in cli.build_parser()._actions:
        if action.option_strings and not set(action.option_strings) & {"-h", "--version"}:
            assert set(action.option_strings) & descriptor_flags, action.option_strings


def test_descriptor_invocation_is_accepted_by_the_parser(tmp_path):
    invocation = tmp_path / "invocation.json"
    bids = tmp_path / "bids"
    bids.mkdir()
    invocation.write_text(json.dumps({
        "bids_dir": str(bids), "output_dir": str(tmp_path / "out"),
        "analysis_level": "participant", "participant_label": ["01", "02"], "nprocs": 2,
        "mem_gb": 4, "skip_bids_validation": True, "work_dir": str(tmp_path / "work"),
        "seed": 3,
    }))  # fmt:skip
    proc = subprocess.run(
        [tool("bosh"), "exec", "simulate", str(ROOT / "bids_app_spec.json"), "-i", str(invocation)],
        capture_output=True, text=True, check=True,
    )  # fmt:skip
    command = next(line for line in proc.stdout.splitlines() if line.startswith("bids_brainage "))
    config = cli.parse_args(command.split()[1:])
    assert config.execution.participant_label == ["01", "02"]
    assert config.nipype.nprocs == 2 and config.nipype.mem_gb == 4
    assert config.execution.skip_bids_validation and config.seeds.master == 3


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)  # fmt:skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_multistage_nonroot_with_baked_templates():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert 'ENTRYPOINT ["bids_brainage"]' in text
    assert "python -m bids_brainage.utils.templates" in text
    assert "COPY --from=templates /opt/templateflow" in text
    assert "torch==2.13.0" in text


def test_singularity_recipe_parses_and_matches_docker():
    proc = subprocess.run([tool("spython"), "recipe", str(ROOT / "Singularity.def")],
                          capture_output=True, text=True)  # fmt:skip
    assert proc.returncode == 0, proc.stderr
    converted = proc.stdout
    assert "FROM python:3.11-slim-bookworm" in converted
    assert "torch==2.13.0" in converted
    assert "python -m bids_brainage.utils.templates" in converted
    assert "exec bids_brainage" in converted
    assert "BIDS_BRAINAGE_CONTAINER=singularity" in converted


def test_template_prefetch_covers_what_preprocessing_needs():
    from bids_brainage.utils.templates import prefetch_queries

    queries = prefetch_queries()
    assert {q["template"] for q in queries} == {"MNI152NLin2009cAsym"}
    assert {(q["resolution"], q["suffix"], q.get("label")) for q in queries} >= {
        (1, "T1w", None), (2, "T1w", None), (2, "mask", None), (2, "probseg", "GM"),
    }  # fmt:skip
