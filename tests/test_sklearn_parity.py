"""`python train.py -m experiment=iris_logreg_grid` against scikit-learn's GridSearchCV on the same folds."""

import warnings

import pytest
import sklearn
from packaging.version import Version
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sweeping import run_sweep

from lightning_tune.data import IrisDataModule, fold_indices

C_GRID = [0.001, 0.01, 0.1, 1, 10, 100]


def sklearn_grid_search() -> GridSearchCV:
    """GridSearchCV over C and penalty on our CV pool (all of iris) and our folds (data.split_seed=0)."""
    (x, y), test = IrisDataModule(test_fraction=0.0, split_seed=0).cv_pool()
    assert test is None and len(y) == 150
    logistic = LogisticRegression(solver="saga", max_iter=100_000, tol=1e-6)
    if Version(sklearn.__version__) >= Version("1.8"):  # `penalty` is deprecated there: l1_ratio 1 is l1, 0 is l2
        grid = {"logistic__C": C_GRID, "logistic__l1_ratio": [1.0, 0.0]}
    else:
        grid = {"logistic__C": C_GRID, "logistic__penalty": ["l1", "l2"]}
    pipeline = Pipeline([("scale", StandardScaler()), ("logistic", logistic)])
    search = GridSearchCV(pipeline, grid, cv=fold_indices(y, 5, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's convergence warnings at the smallest C
        return search.fit(x, y)


def sklearn_penalty(params: dict) -> str:
    if "logistic__penalty" in params:
        return params["logistic__penalty"]
    return "l1" if params["logistic__l1_ratio"] == 1.0 else "l2"


@pytest.mark.slow
def test_iris_grid_matches_gridsearchcv_within_two_points(tmp_path):
    sweep = run_sweep(
        tmp_path / "sweep", "experiment=iris_logreg_grid", "logger=none", "launcher=joblib", "launcher.n_jobs=2"
    ).ok()
    rows = sweep.rows()
    assert len(rows) == 12 and {row["state"] for row in rows} == {"COMPLETE"}
    ours = {(float(row["regularization.C"]), row["regularization.penalty"]): float(row["value"]) for row in rows}
    assert set(ours) == {(c, penalty) for c in C_GRID for penalty in ("l1", "l2")}
    assert all(float(row["cv_std"]) >= 0 for row in rows)

    search = sklearn_grid_search()
    theirs = {
        (float(params["logistic__C"]), sklearn_penalty(params)): score
        for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])
    }
    assert max(ours.values()) == pytest.approx(search.best_score_, abs=0.02 + 1e-6), (ours, theirs)
    # Where the L2 penalty dominates, the optimum is unique and found: the same scores, C for C.
    for c in (0.001, 0.01, 0.1, 1):
        assert ours[(c, "l2")] == pytest.approx(theirs[(c, "l2")], abs=0.01 + 1e-6), (c, ours, theirs)
