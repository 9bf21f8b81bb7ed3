"""Where a run writes: its output directory and its log file."""

import importlib
import logging
import os
import sys
import time

import pytest

from rlinf_embodied.paths import log_into


def test_a_run_whose_output_dir_is_not_hydras_logs_there_too(tmp_path):
    """Before: sft.output_dir / eval.output_dir / runner.output_dir moved the checkpoints, metrics and results, but
    sft.log / eval.log / train.log stayed in outputs/<date>/<time>/."""
    root, output_dir = logging.getLogger(), tmp_path / "run"
    output_dir.mkdir()
    before = list(root.handlers)
    try:
        log_into(str(output_dir), str(output_dir), "eval.log")  # Hydra's run directory: its own log file is there
        assert root.handlers == before
        log_into(str(output_dir), str(tmp_path / "hydra"), "eval.log")
        logging.getLogger("rlinf_embodied.eval").warning("written beside the results")
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
    assert "written beside the results" in (output_dir / "eval.log").read_text()


def _without_new_log_handlers(call):
    """Run an entry point's main in-process; its log_into file handler is not left to later tests."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        return call()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()


@pytest.mark.parametrize(
    "entry, setting, job", [("train", "runner.output_dir", "run_training"), ("sft", "sft.output_dir", "run_sft")]
)
def test_train_and_sft_refuse_an_output_dir_that_is_a_file_or_unwritable_before_anything_runs(
    entry, setting, job, tmp_path, monkeypatch, capsys
):
    """make_output_dir checks what eval's check_writable_output_dir did, for every entry point (before: train and sft
    read "cannot be created (File exists)" for a file, and an unwritable directory failed in the log handler)."""
    from rlinf_embodied.paths import make_output_dir

    module = importlib.import_module(f"rlinf_embodied.{entry}")
    started = []
    monkeypatch.setattr(module, job, lambda *args, **kwargs: started.append(args) or [])
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    unwritable = ["/proc/sys"] if os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK) else []
    for path, message in [(a_file, "is a file, not a directory"), *[(path, "is not writable") for path in unwritable]]:
        argv = [entry, f"{setting}={path}", f"hydra.run.dir={tmp_path / 'hydra'}", "hydra.output_subdir=null"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            _without_new_log_handlers(module.main)
        assert f"{setting}='{path}' {message}" in capsys.readouterr().err
    assert not started and a_file.read_text() == ""
    nested = tmp_path / "new" / "run"
    make_output_dir(str(nested), setting)
    assert nested.is_dir() and os.listdir(nested) == []  # the write check leaves nothing behind


def _snapshot(directory) -> dict[str, tuple[int, int]]:
    """Every entry below `directory` (itself included): its modification time and size."""
    entries = {}
    for root, dirs, files in os.walk(directory):
        for name in [".", *dirs, *files]:
            path = os.path.join(root, name)
            stat = os.stat(path)
            entries[os.path.relpath(path, directory)] = (stat.st_mtime_ns, stat.st_size)
    return entries


@pytest.mark.parametrize(
    "entry, setting, job", [("train", "runner.output_dir", "run_training"), ("sft", "sft.output_dir", "run_sft")]
)
def test_a_refused_start_leaves_the_claimed_directory_untouched(entry, setting, job, tmp_path, monkeypatch, capsys):
    """The refusal of an output directory that holds a run runs before Hydra creates its run directory (a callback
    in the entry's config). Before: `hydra.run.dir=<finished run>` (or a run in Hydra's default directory, as
    runner.output_dir defaults to it) was refused only after Hydra had overwritten that run's .hydra/*.yaml and
    added <entry>.log, and a refused `runner.output_dir=<finished run>` left a new, empty Hydra run directory."""
    from rlinf_embodied.runners.metrics_logger import MetricsLogger, claim_output_dir

    run = tmp_path / "run"
    logger = MetricsLogger(str(run))
    logger.log(0, {"train/loss": 0.5})
    logger.close()
    os.makedirs(run / "checkpoints" / "iteration_000000")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the finished run's config\n")
    before = _snapshot(run)
    time.sleep(0.01)  # a write below would show in the modification times
    module = importlib.import_module(f"rlinf_embodied.{entry}")
    monkeypatch.setattr(module, job, lambda *args, **kwargs: pytest.fail("the run started"))

    def refused(*overrides: str) -> str:
        monkeypatch.setattr(sys, "argv", [entry, *overrides])
        with pytest.raises(SystemExit):
            _without_new_log_handlers(module.main)
        return capsys.readouterr().err

    assert f"OutputDirInUse: {setting}='{run}' already holds a run's outputs" in refused(f"hydra.run.dir={run}")
    assert _snapshot(run) == before
    error = refused(f"{setting}={run}", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert f"{setting}='{run}' already holds a run's outputs" in error
    assert _snapshot(run) == before and not (tmp_path / "hydra").exists()

    # a directory another run writes into now (two jobs started in the same second under Hydra's default
    # outputs/<date>/<time>): its .hydra/ is not overwritten either
    busy = tmp_path / "busy"
    busy.mkdir()
    claim = claim_output_dir(str(busy), setting, None, "resume")
    try:
        assert "is in use by another run writing into it now" in refused(f"hydra.run.dir={busy}")
    finally:
        os.close(claim)
    assert os.listdir(busy) == []


@pytest.mark.parametrize(
    "entry, setting, sweep",
    [
        ("train", "runner.output_dir", "runner.seed=0,1"),
        ("sft", "sft.output_dir", "sft.seed=0,1,2"),
        ("eval", "eval.output_dir", "eval.seed=1000,2000"),
    ],
)
def test_a_sweep_of_several_jobs_into_one_literal_output_dir_is_refused_before_any_job(
    entry, setting, sweep, tmp_path, monkeypatch, capsys
):
    """Before: job #0 ran to its end (a whole training run) and job #1 was refused the directory job #0 had written."""
    module = importlib.import_module(f"rlinf_embodied.{entry}")
    jobs = []
    monkeypatch.setattr("hydra.core.utils.run_job", lambda *args, **kwargs: jobs.append(args))

    def sweep_of(*overrides: str) -> None:
        monkeypatch.setattr(sys, "argv", [entry, "-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
        _without_new_log_handlers(module.main)

    with pytest.raises(SystemExit):
        sweep_of(sweep, f"{setting}={tmp_path / 'out'}")
    jobs_count = len(sweep.split("=")[1].split(","))
    assert f"{setting}='{tmp_path / 'out'}' is one directory for all {jobs_count} jobs of this sweep" in (
        capsys.readouterr().err
    )
    assert jobs == [] and not (tmp_path / "sweep").exists()
    # one job, a swept directory, or one per job: each job writes its own directory (the sweep starts)
    from rlinf_embodied.paths import sweep_jobs_and_value

    assert sweep_jobs_and_value(_sweep_config(sweep, f"{setting}=a,b"), setting) == (2 * jobs_count, None)
    assert sweep_jobs_and_value(_sweep_config(f"{setting}=a", "x=1"), setting) == (1, "a")
    given = f"{tmp_path}/${{hydra:job.num}}"
    assert sweep_jobs_and_value(_sweep_config(sweep, f"{setting}={given}"), setting) == (jobs_count, given)


def _sweep_config(*overrides: str):
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"job": {"name": "x"}, "overrides": {"task": list(overrides)}}})
