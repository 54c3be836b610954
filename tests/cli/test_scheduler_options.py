"""--list-participants (the task list of scripts/slurm/submit.sh) and --use-plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_brainage.cli.parser import UsageError, parse_args
from bids_brainage.cli.run import main


def test_list_participants_prints_the_selection_and_writes_nothing(synthetic_dataset, tmp_path,
                                                                   capsys):  # fmt:skip
    bids, _ = synthetic_dataset
    out = tmp_path / "out"
    wanted = sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))[:2]
    code = main([str(bids), str(out), "participant", "--list-participants",
                 "--participant-label", *wanted])  # fmt:skip
    assert code == 0
    assert capsys.readouterr().out.split() == wanted
    assert not out.exists()
    assert main([str(bids), str(out), "participant", "--list-participants",
                 "--participant-label", "nobody"]) != 0  # fmt:skip


def test_use_plugin_file_sets_nipype_plugin_and_arguments(synthetic_dataset, tmp_path):
    bids, _ = synthetic_dataset
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURMGraph\nplugin_args: {sbatch_args: --mem=2G}\n")
    config = parse_args([str(bids), str(tmp_path / "o"), "participant", "--use-plugin",
                         str(plugin)])  # fmt:skip
    assert config.nipype.plugin == "SLURMGraph" and config.nipype.batch_plugin
    assert config.nipype.plugin_args == {"sbatch_args": "--mem=2G",
                                         "dont_resubmit_completed_jobs": True}  # fmt:skip
    plugin.write_text("plugin: MultiProc\n")
    config = parse_args([str(bids), str(tmp_path / "o"), "participant", "--use-plugin",
                         str(plugin), "--nprocs", "3"])  # fmt:skip
    assert config.nipype.plugin_args == {"n_procs": 3} and not config.nipype.batch_plugin


@pytest.mark.parametrize("text", ["plugin: Nonsense\n", "plugin_args: {}\n", "plugin: [\n",
                                  "plugin: SLURM\nplugin_args: 3\n"])  # fmt:skip
def test_bad_plugin_files_are_one_line_usage_errors(synthetic_dataset, tmp_path, text):
    bids, _ = synthetic_dataset
    plugin = tmp_path / "plugin.yml"
    plugin.write_text(text)
    with pytest.raises(UsageError, match="--use-plugin"):
        parse_args([str(bids), str(tmp_path / "o"), "participant", "--use-plugin", str(plugin)])
    with pytest.raises(UsageError, match="--use-plugin"):
        parse_args([str(bids), str(tmp_path / "o"), "participant", "--use-plugin",
                    str(Path(tmp_path / "missing.yml"))])  # fmt:skip
