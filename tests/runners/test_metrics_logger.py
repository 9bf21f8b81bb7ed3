"""MetricsLogger: metrics.jsonl lines and TensorBoard scalars."""

import json
import os

from rlinf_embodied.runners.metrics_logger import MetricsLogger


def test_the_records_index_keys_are_not_tensorboard_scalars(tmp_path):
    """Before: SFT's records (which carry "step" beside "iteration") gave TensorBoard a top-level "step" scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(str(tmp_path))
    logger.log(10, {"step": 10, "sft/loss": 0.5})
    logger.close()
    assert json.loads(open(tmp_path / "metrics.jsonl").readline()) == {"iteration": 10, "step": 10, "sft/loss": 0.5}
    events = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["sft/loss"]


def write_run(directory, iterations: int = 3, checkpoint: bool = True) -> None:
    """A finished run's outputs: metrics.jsonl, TensorBoard scalars and a checkpoint per iteration."""
    logger = MetricsLogger(str(directory))
    for iteration in range(iterations):
        logger.log(iteration, {"train/loss": 1.0 / (iteration + 1)})
        if checkpoint:
            os.makedirs(os.path.join(directory, "checkpoints", f"iteration_{iteration:06d}"))
    logger.close()


def test_a_new_logger_does_not_overwrite_a_runs_metrics(tmp_path):
    """Before: MetricsLogger opened metrics.jsonl with "w": a second run in the directory wiped the first's lines and
    wrote its TensorBoard curve over the first's."""
    import pytest

    write_run(tmp_path, checkpoint=False)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match=r"already holds a run's metrics \(metrics.jsonl, tensorboard/ events\)"):
        MetricsLogger(str(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == before
    resumed = MetricsLogger(str(tmp_path), resume_after=1)  # a resume keeps the lines up to its checkpoint
    resumed.close()
    assert [json.loads(line)["iteration"] for line in open(tmp_path / "metrics.jsonl")] == [0, 1]


def test_a_run_stopped_before_its_first_iteration_leaves_no_outputs(tmp_path):
    """An empty metrics.jsonl and an event file without scalars (the logger made, nothing logged) count as nothing."""
    from rlinf_embodied.runners.metrics_logger import run_outputs

    MetricsLogger(str(tmp_path)).close()
    assert os.listdir(tmp_path / "tensorboard") and run_outputs(str(tmp_path)) == []
    MetricsLogger(str(tmp_path)).close()  # the same command again
    write_run(tmp_path / "run")
    assert run_outputs(str(tmp_path / "run")) == ["metrics.jsonl", "checkpoints/", "tensorboard/ events"]


def test_an_output_dir_with_a_run_is_refused_unless_resuming_from_its_checkpoint(tmp_path):
    """Before: training into a directory that held a run truncated its metrics.jsonl and mixed both runs' checkpoints
    (checkpoints/best was the old run's) and TensorBoard events."""
    import pytest

    from rlinf_embodied.runners.metrics_logger import OutputDirInUse, claim_output_dir

    def claim(directory, resume=None):
        os.close(claim_output_dir(str(directory), "runner.output_dir", resume, "runner.resume"))

    run = tmp_path / "run"
    write_run(run)
    latest = run / "checkpoints" / "iteration_000002"
    with pytest.raises(OutputDirInUse) as refused:
        claim(run)
    message = str(refused.value)
    assert f"runner.output_dir='{run}' already holds a run's outputs (metrics.jsonl, checkpoints/" in message
    assert "runner.output_dir=<new dir>" in message and f"runner.resume={latest} runner.output_dir={run}" in message
    claim(run, resume=str(latest))  # the printed resume command: a checkpoint in the directory
    claim(run, resume=os.path.relpath(latest))  # relative, as a user types it
    write_run(tmp_path / "other")
    with pytest.raises(OutputDirInUse, match=r"runner.resume='.*other.*' is not a checkpoint in it"):
        claim(run, resume=str(tmp_path / "other" / "checkpoints" / "iteration_000000"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    held = claim_output_dir(str(fresh), "runner.output_dir", None, "runner.resume")
    try:  # two jobs started in the same second under Hydra's default outputs/<date>/<time>
        with pytest.raises(OutputDirInUse, match=r"is in use by another run writing into it now"):
            claim(fresh)
    finally:
        os.close(held)
    claim(fresh)  # free again once the first run ends
