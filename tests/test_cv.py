"""k-fold cross-validation (`cv.folds`): the folds, the runs, what reaches metrics.json, pruning by fold."""

import json
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState
from sklearn.model_selection import StratifiedKFold
from sweeping import ONLY_LR, TINY, enqueue, run_sweep

from lightning_tune.cv import RunOutcome, cross_validate
from lightning_tune.data import DigitsDataModule, IrisDataModule, fold_indices
from lightning_tune.errors import ConfigError
from lightning_tune.run import train
from lightning_tune.sweeping.study import PRUNER_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

# iris, 3 folds of one short epoch each: a cross-validated run of a few seconds
IRIS_CV = ["data=iris", "model=linear", "cv.folds=3"]


def indexed(module_class: type, **kwargs):
    """The module with each sample's index as its only feature, so a split shows which samples it holds."""

    class Indexed(module_class):
        def load(self):
            _, y = super().load()
            return np.arange(len(y), dtype=np.float32)[:, None], y

    return Indexed(**kwargs)


def fold_ids(module) -> dict[str, np.ndarray]:
    return {name: x[:, 0].astype(int) for name, (x, _) in module.fold_splits().items()}


@pytest.mark.parametrize("test_fraction", [0.15, 0.0])
def test_folds_partition_the_pool_stratified_and_leave_the_test_split_alone(test_fraction):
    folds = 5
    module = indexed(DigitsDataModule, test_fraction=test_fraction)
    _, labels = module.load()
    plain = {name: x[:, 0].astype(int) for name, (x, _) in module.load_splits().items()}
    pool = np.sort(np.concatenate([plain["train"], plain["val"]]))
    vals = []
    for index in range(folds):
        module.use_fold(index, folds)
        ids = fold_ids(module)
        assert set(ids) == ({"train", "val", "test"} if test_fraction else {"train", "val"})
        if test_fraction:
            assert np.array_equal(ids["test"], plain["test"])  # the same test split as without CV
        assert not set(ids["train"]) & set(ids["val"])
        assert np.array_equal(np.sort(np.concatenate([ids["train"], ids["val"]])), pool)
        overall, counts = Counter(labels[pool].tolist()), Counter(labels[ids["val"]].tolist())
        for label, total in overall.items():  # stratified: each class's share, up to rounding
            assert abs(counts[label] - total / folds) <= 1, (index, label)
        vals.append(ids["val"])
    everything = np.concatenate(vals)
    assert len(everything) == len(pool) and set(everything) == set(pool)  # each sample validates once


def test_folds_are_scikit_learns_stratified_k_fold_by_split_seed():
    (x, y), test = IrisDataModule(test_fraction=0.0, split_seed=3).cv_pool()
    assert test is None and len(y) == 150 and np.array_equal(y, np.sort(y))  # all of iris, in its own order
    ours = fold_indices(y, 5, seed=3)
    theirs = StratifiedKFold(5, shuffle=True, random_state=3).split(x, y)
    for (train_ids, val_ids), (their_train, their_val) in zip(ours, theirs, strict=True):
        assert np.array_equal(train_ids, their_train) and np.array_equal(val_ids, their_val)
    again, other = fold_indices(y, 5, seed=3), fold_indices(y, 5, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(ours, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(ours, other))


def test_a_folds_normalization_comes_from_its_training_part():
    module = IrisDataModule(test_fraction=0.0)
    module.use_fold(2, 5)
    module.setup()
    x_train, _ = module.splits["train"]
    assert np.allclose(x_train.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(x_train.std(0, unbiased=False).numpy(), 1, atol=1e-3)
    assert not np.allclose(module.splits["val"][0].mean(0).numpy(), 0, atol=1e-3)


@pytest.mark.parametrize("folds", [1, 0, -3, "x", 2.5, True])
def test_bad_folds_are_one_line_naming_cv_folds_and_write_nothing(make_cfg, tmp_path, folds):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("data=iris", "model=linear", f"cv.folds={str(folds).lower()}", "logger=tensorboard"))
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.startswith("cv.folds=")
    assert ">= 2" in message and "null" in message
    assert not any(tmp_path.iterdir())


def test_more_folds_than_the_smallest_class_holds_names_the_most(make_cfg, tmp_path):
    # iris less its 20% test split: 40 flowers of each class in the CV pool
    with pytest.raises(ConfigError, match=r"^cv\.folds=41 .* smallest class .*; choose 2 to 40 ") as error:
        train(make_cfg("data=iris", "model=linear", "cv.folds=41", "logger=tensorboard"))
    assert len(str(error.value).splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_cv_run_trains_each_fold_in_its_directory_and_reports_mean_and_std(make_cfg, tmp_path):
    value = train(make_cfg(*IRIS_CV, "logger=csv"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    cv = metrics["cv"]
    folds = [json.loads((tmp_path / f"fold_{i}" / "metrics.json").read_text()) for i in range(3)]
    assert cv["folds"] == 3 and cv["fold_dirs"] == ["fold_0", "fold_1", "fold_2"]
    assert cv["values"] == [fold["value"] for fold in folds]
    assert value == pytest.approx(statistics.fmean(cv["values"])) == pytest.approx(metrics["value"])
    assert cv["std"] == pytest.approx(statistics.pstdev(cv["values"]))
    assert cv["objectives"]["val/acc"]["std"] == pytest.approx(cv["std"])
    assert metrics["test"]["acc"] == pytest.approx(statistics.fmean(fold["test"]["acc"] for fold in folds))
    assert cv["test_std"]["acc"] == pytest.approx(statistics.pstdev(fold["test"]["acc"] for fold in folds))
    assert metrics["lr"] == [fold["lr"] for fold in folds] == [0.001] * 3  # each fold trained with optimizer.lr
    for i, fold in enumerate(folds):  # each fold's own checkpoint and logs
        assert Path(fold["best_checkpoint"]).parent == tmp_path / f"fold_{i}" / "checkpoints"
        assert (tmp_path / f"fold_{i}" / "csv" / "metrics.csv").is_file()
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "csv").exists()


def test_regularization_follows_each_folds_training_size(make_cfg, tmp_path, monkeypatch):
    """regularization=sklearn: l2 = 1 / (C * n_train), n_train the fold's training part (150 * 4/5)."""
    import lightning_tune.run as run

    seen = []
    original = run.ClassificationModule.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["regularization"])
        original(self, *args, **kwargs)

    monkeypatch.setattr(run.ClassificationModule, "__init__", spy)
    train(make_cfg(*IRIS_CV, "cv.folds=5", "data.test_fraction=0", "regularization=sklearn", "regularization.C=0.5"))
    assert [r.l2 for r in seen] == pytest.approx([1 / (0.5 * 120)] * 5)
    assert {(r.l1, r.l2_mode) for r in seen} == {(0.0, "penalty")}


def cv_cfg(tmp_path: Path, trial: dict) -> OmegaConf:
    return OmegaConf.create(
        {"optimized_metric": "val/acc", "output_dir": str(tmp_path), "data": {"split_seed": 0}, "trial": trial}
    )


def fake_folds(values: list[float]):
    """`fit_fold` that trains nothing: fold i scores values[i]."""
    seen = []

    def fit_fold(index: int, fold_dir: Path) -> RunOutcome:
        seen.append(fold_dir.name)
        fold_dir.mkdir(parents=True)
        return RunOutcome([values[index]], {"val": {"acc": values[index]}}, epochs=1, lr=0.001)

    return fit_fold, seen


@pytest.fixture
def study(tmp_path):
    """A study whose pruner stops a trial below the median of earlier ones; one trial done, scoring 0.9."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="cv", storage=url, direction="maximize")
    study.set_user_attr(PRUNER_ATTR, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    done = study.ask()
    for step in range(4):
        done.report(0.9, step)
    study.tell(done, 0.9)
    return url


def test_a_trial_reports_the_running_mean_per_fold_and_records_the_std(study, tmp_path):
    trial = optuna.load_study(study_name="cv", storage=study).ask()
    values = [0.95, 0.85, 1.0, 0.9]
    fit_fold, seen = fake_folds(values)
    mean = cross_validate(cv_cfg(tmp_path, {"number": trial.number, "study_name": "cv", "storage": study}), 4,
                          ["val/acc"], fit_fold)  # fmt: skip
    assert mean == [pytest.approx(0.925)] and seen == ["fold_0", "fold_1", "fold_2", "fold_3"]
    frozen = optuna.load_study(study_name="cv", storage=study).trials[trial.number]
    running = [statistics.fmean(values[: i + 1]) for i in range(4)]
    assert frozen.intermediate_values == pytest.approx(dict(enumerate(running)))  # step = fold index
    assert frozen.user_attrs["cv_std"] == {"val/acc": pytest.approx(statistics.pstdev(values))}


def test_a_bad_configuration_is_pruned_after_its_first_fold(study, tmp_path):
    trial = optuna.load_study(study_name="cv", storage=study).ask()
    fit_fold, seen = fake_folds([0.1, 0.95, 0.95, 0.95])
    with pytest.raises(optuna.TrialPruned, match="after fold 1 of 4: mean val/acc=0.1000"):
        cross_validate(cv_cfg(tmp_path, {"number": trial.number, "study_name": "cv", "storage": study}), 4,
                       ["val/acc"], fit_fold)  # fmt: skip
    assert seen == ["fold_0"]
    assert not (tmp_path / "metrics.json").exists()


def test_a_plain_cv_run_reports_to_no_study(tmp_path):
    fit_fold, seen = fake_folds([0.1, 0.3])
    assert cross_validate(cv_cfg(tmp_path, {"number": None}), 2, ["val/acc"], fit_fold) == [pytest.approx(0.2)]
    assert json.loads((tmp_path / "metrics.json").read_text())["cv"]["std"] == pytest.approx(0.1)


def test_a_requeued_job_skips_the_folds_it_finished(tmp_path, monkeypatch):
    import lightning_tune.cv as cv

    fit_fold, seen = fake_folds([0.5, 0.7, 0.9])
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "metrics.json").write_text(json.dumps({"val": {"acc": 0.6}, "value": 0.6, "epochs": 3}))
    monkeypatch.setattr(cv, "armed", lambda: True)  # inside a trial's SLURM job
    mean = cross_validate(cv_cfg(tmp_path, {"number": None}), 3, ["val/acc"], fit_fold)
    assert mean == [pytest.approx((0.6 + 0.7 + 0.9) / 3)]
    assert seen == ["fold_1", "fold_2"]


@pytest.mark.slow
def test_a_cv_sweep_records_mean_and_std_and_prunes_a_bad_trial_after_a_fold(tmp_path):
    """Through the Optuna sweeper: a good trial, then one at chance level, pruned after its first of 3 folds."""
    sweep = run_sweep(
        tmp_path / "sweep",
        "hparams_search=random", *ONLY_LR, *TINY, "cv.folds=3", "hydra.sweeper.n_trials=2",
        enqueue({"optimizer.lr": "0.003"}, {"optimizer.lr": "1e-06"}),
        "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
    ).ok()  # fmt: skip
    good, bad = sweep.trials()
    assert (good.state, bad.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert bad.user_attrs["fail_reason"].startswith("pruned after fold 1 of 3")
    assert sorted(path.name for path in (tmp_path / "sweep" / "1").glob("fold_*")) == ["fold_0"]
    metrics = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert good.value == pytest.approx(statistics.fmean(metrics["cv"]["values"]))
    running = [statistics.fmean(metrics["cv"]["values"][: i + 1]) for i in range(3)]
    assert good.intermediate_values == pytest.approx(dict(enumerate(running)))
    assert good.user_attrs["cv_std"] == {"val/acc": pytest.approx(metrics["cv"]["std"])}
    rows = sweep.rows()
    assert float(rows[0]["value"]) == pytest.approx(good.value)
    assert float(rows[0]["cv_std"]) == pytest.approx(metrics["cv"]["std"]) and metrics["cv"]["std"] > 0
    assert rows[1]["state"] == "PRUNED" and rows[1]["cv_std"] == ""
