"""Where a run writes: its output directory and its log file."""

import logging

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
