"""kd.distill.curves: the kept epoch and the run's summary, from hand-made curves."""

import math

from kd.distill.curves import Curves


def test_curves_best_is_the_kept_epoch_never_the_untrained_row() -> None:
    curves = Curves(epochs=[{"epoch": 0, "dev_ndcg@10": 0.9}, {"epoch": 1, "dev_ndcg@10": 0.4}, {"epoch": 2, "dev_ndcg@10": 0.5}])
    assert curves.best()["epoch"] == 2  # the trainer never saves the untrained model, even when it scores higher
    assert Curves(epochs=[{"epoch": 0, "dev_ndcg@10": 0.3}]).best()["epoch"] == 0  # nothing trained


def test_curves_summary_reports_the_kept_epoch_and_the_saved_score() -> None:
    curves = Curves(
        steps=[{"step": 1, "total": 0.8}, {"step": 2, "total": 0.25}],
        epochs=[{"epoch": 0, "dev_ndcg@10": 0.3}, {"epoch": 1, "dev_ndcg@10": 0.5}, {"epoch": 2, "dev_ndcg@10": 0.45}],
    )
    s = curves.summary(0.55, 0.5, dev_pool_size=120, groups=7, corpus_loss=[0.2])
    assert (s["best_epoch"], s["best_dev_pool_ndcg@10"], s["untrained_dev_pool_ndcg@10"]) == (1, 0.5, 0.3)
    assert (s["dev_pool_ndcg@10"], s["interpolate"], s["final_loss"]) == (0.55, 0.5, 0.25)  # the mix's score, not the epoch's
    assert (s["dev_pool_size"], s["train_groups"], s["corpus_fit_loss"]) == (120, 7, [0.2])
    assert math.isnan(Curves(epochs=[{"epoch": 0, "dev_ndcg@10": 0.3}]).summary(0.3, 1.0, 1, 0, [])["final_loss"])
