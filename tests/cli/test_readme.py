"""The README's two set-up commands are what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_ci_runs_the_readme_setup_commands_verbatim():
    install_and_demo, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_demo in ci
    assert tests in ci
    assert "bids_brainage-demo" in install_and_demo and "pytest" in tests
