import json

import numpy as np

from bids_brainage.config import Config, ExecutionSettings, NipypeSettings, Seeds


def test_derived_seeds_are_stable_and_distinct():
    a, b = Seeds(master=1), Seeds(master=1)
    assert a.numpy == b.numpy and a.torch == b.torch and a.ants == b.ants
    assert len({a.numpy, a.torch, a.ants}) == 3
    assert Seeds(master=2).numpy != a.numpy


def test_apply_makes_global_generators_repeatable(monkeypatch):
    import torch  # apply() seeds torch once it is imported

    Seeds(master=7).apply()
    first = (np.random.rand(), torch.rand(1).item())
    Seeds(master=7).apply()
    assert (np.random.rand(), torch.rand(1).item()) == first


def test_plugin_choice_follows_nprocs():
    assert NipypeSettings(nprocs=1).plugin == "Linear"
    multi = NipypeSettings(nprocs=4, mem_gb=8)
    assert multi.plugin == "MultiProc"
    assert multi.plugin_args["n_procs"] == 4 and multi.plugin_args["memory_gb"] == 8


def test_config_dump_is_plain_json(tmp_path):
    config = Config(
        execution=ExecutionSettings(
            bids_dir=tmp_path / "in", output_dir=tmp_path / "out",
            analysis_level="participant", work_dir=tmp_path / "work",
        )
    )  # fmt:skip
    dumped = json.loads(config.dump(tmp_path / "c.json").read_text())
    assert dumped["execution"]["bids_dir"] == str(tmp_path / "in")
    assert dumped["seeds"]["master"] == Seeds.master


def test_limit_threads_sets_library_variables(monkeypatch):
    for name in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        monkeypatch.delenv(name, raising=False)
    NipypeSettings(omp_nthreads=3).limit_threads()
    import os

    assert (
        os.environ["OMP_NUM_THREADS"] == os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "3"
    )
