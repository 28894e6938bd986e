"""The features and code paths that make keepbest cheap (timings live in scripts/bench)."""

from __future__ import annotations

import pytest

from conftest import small_config
from keepbest.config import load_config
from keepbest.errors import ConfigError


@pytest.mark.parametrize("steps", [0, -1, True, 1.5])
def test_train_eval_steps_must_be_a_positive_count(steps):
    cfg = small_config(checkpoint={"monitor": "loss", "train_eval_steps": steps})
    with pytest.raises(ConfigError, match=r"checkpoint\.train_eval_steps"):
        load_config(cfg)


def test_bounded_train_eval_pass_measures_and_verifies_the_first_batches(tmp_path):
    import keepbest
    from keepbest.data import load_pipelines

    cfg = small_config(
        output_dir=str(tmp_path),
        checkpoint={"monitor": "loss", "train_eval_steps": 2},
        train={"epochs": 2},
    )
    result = keepbest.train(cfg)

    pipes = load_pipelines(load_config(cfg))
    model = keepbest.load_best(result.run_dir)
    first_two = model.evaluate(pipes.train_eval.take(2), verbose=0, return_dict=True)["loss"]
    everything = model.evaluate(pipes.train_eval, verbose=0, return_dict=True)["loss"]
    assert result.record.value == first_two == result.record.verified_value
    assert everything != first_two
    assert [row["epoch_end_loss"] for row in result.history][result.record.epoch - 1] == (
        pytest.approx(first_two)
    )
