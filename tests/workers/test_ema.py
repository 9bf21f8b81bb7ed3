"""ParameterEMA (workers/ema.py); the SFT worker's averaged checkpoints are tested in tests/test_sft.py."""

import pytest
import torch

from rlinf_embodied.config import SFTConfig
from rlinf_embodied.workers.ema import ParameterEMA


def test_average_follows_the_warmed_up_decay():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = ParameterEMA([param], decay=0.9)
    expected = torch.zeros(3)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0] * 5):
        with torch.no_grad():
            param.fill_(value)
        ema.update()
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
    torch.testing.assert_close(ema.averages[0], expected)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.9


def test_swapped_in_restores_the_live_weights_even_on_error():
    param = torch.nn.Parameter(torch.full((2,), 5.0))
    ema = ParameterEMA([param], decay=0.5)
    with torch.no_grad():
        param.fill_(7.0)
    ema.update()  # first update: decay 0.1 -> 0.1 * 5 + 0.9 * 7
    with pytest.raises(RuntimeError):
        with ema.swapped_in():
            torch.testing.assert_close(param.detach(), torch.full((2,), 6.8))
            raise RuntimeError("saving failed")
    torch.testing.assert_close(param.detach(), torch.full((2,), 7.0))


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_bad_decay_is_rejected(decay):
    with pytest.raises(ValueError, match="sft.ema_decay"):
        SFTConfig(ema_decay=decay)
