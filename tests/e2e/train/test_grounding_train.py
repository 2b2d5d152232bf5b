"""Grounding after training: a briefly trained attention model looks at the objects its
words name (the rule and the untrained-model controls are in unit/metrics/test_grounding.py)."""

import pytest

N_SCENES = 200  # test images scored


@pytest.mark.slow
def test_a_briefly_trained_model_peaks_on_named_objects_well_above_chance(tmp_path):
    """2 epochs of 2,000 images, then capgen-eval's grounding on 200 test images.

    Measured (generated captions, greedy): 0.58 against a chance of 0.14 for this seed (42);
    0.38 / 0.16 for seed 1, 0.51 / 0.16 with 10 warm-up steps, 0.37 / 0.14 after 3 epochs of
    4,000: at least 0.22 above chance in every run, hence the 0.15 margin. At this stage the
    attention has learnt to look at objects, not yet at the named one: on scenes with two or
    more objects the renamed() control scores as high in all four runs (see the report).
    """
    from capgen.commands.train.fit import train

    from helpers.commands import run_eval
    from helpers.runs import compose_train

    cfg = compose_train(tmp_path / "run", f"data.source.sizes={{train:2000,val:50,test:{N_SCENES}}}",
                        "trainer.max_epochs=2", "model.module.test.decode.method=greedy",
                        "model.module.test.metrics=[BLEU,CIDEr]", small_shapes=False, fast=False)
    trained = train(cfg)
    best = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))  # the one capgen-train tested
    # No saved run config beside this checkpoint: eval composes shapes, given the test size.
    report = run_eval(tmp_path / "eval", "decode=greedy", f"ckpt_path={best}", f"data.source.sizes.test={N_SCENES}")
    assert report["images"] == N_SCENES and report["grounding_words"] >= 80
    assert report["grounding"] > report["grounding_chance"] + 0.15, report
    # capgen-train's own test step logs the same numbers
    for key in ("grounding", "grounding_chance", "grounding_other"):
        assert trained[f"test/{key}"] == pytest.approx(report[key], abs=1e-6), key
