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
