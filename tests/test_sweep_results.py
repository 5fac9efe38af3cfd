"""A sweep's results and report, from real Optuna studies in SQLite with hand-made trials."""

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from matplotlib import pyplot
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState, create_trial

import lightning_tune.sweeping
from lightning_tune.sweeping import plots, results
from lightning_tune.sweeping.results import write_progress, write_report

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {
    "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
    "model.width": IntDistribution(8, 64),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def new_study(sweep_dir: Path, objectives: list[str], directions: list[str], name: str = "sweep") -> optuna.Study:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name=name, directions=directions)
    study.set_user_attr("objectives", objectives)
    return study


def add(
    study: optuna.Study,
    sweep_dir: Path,
    state: TrialState,
    values: Optional[list[float]] = None,
    reason: Optional[str] = None,
    **params: Any,
) -> Path:
    """One trial as the sweeper leaves it: its run dir with the composed config, and its user attrs."""
    number = len(study.trials)
    run_dir = sweep_dir / str(number)
    config = {"seed": 100 + number, "optimizer": {"lr": params.get("optimizer.lr")},
              "trial": {"number": number, "storage": "sqlite:///x.db", "study_name": study.study_name}}
    OmegaConf.save(config, (run_dir / ".hydra").mkdir(parents=True) or run_dir / ".hydra" / "config.yaml")
    user_attrs = {"run_dir": str(run_dir.resolve()), "trial_seed": 100 + number, "duration_s": 1.5,
                  "data.batch_size": 64}  # a fixed override, as the released sweeper records it
    if reason is not None:
        user_attrs["fail_reason"] = reason
    study.add_trial(create_trial(
        state=state, values=values, params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params}, user_attrs=user_attrs,
    ))
    return run_dir


@pytest.fixture
def single(tmp_path: Path) -> tuple[optuna.Study, Path]:
    """val/acc maximized: trial 2 is best; a pruned, a failed and a running trial; one conditional param."""
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/acc"], ["maximize"])
    add(study, sweep, TrialState.COMPLETE, [0.80], **{"optimizer.lr": 1e-3, "optimizer": "adam"})
    add(study, sweep, TrialState.COMPLETE, [0.85], **{"optimizer.lr": 3e-3, "optimizer": "sgd", "model.width": 32})
    add(study, sweep, TrialState.COMPLETE, [0.95], **{"optimizer.lr": 1e-2, "optimizer": "adam"})
    pruned = "pruned after epoch 1: val/acc=0.3000"
    add(study, sweep, TrialState.PRUNED, [0.30], pruned, **{"optimizer.lr": 0.09, "optimizer": "sgd"})
    add(study, sweep, TrialState.FAIL, None, "diverged: loss is nan", **{"optimizer.lr": 0.1, "optimizer": "sgd"})
    add(study, sweep, TrialState.COMPLETE, [0.90], **{"optimizer.lr": 2e-4, "optimizer": "sgd", "model.width": 16})
    study.add_trial(create_trial(state=TrialState.RUNNING))
    study.add_trial(create_trial(state=TrialState.WAITING))
    return study, sweep


@pytest.fixture
def multi(tmp_path: Path) -> tuple[optuna.Study, Path]:
    """val/acc up, model/params down: trials 0, 1 and 3 form the front, 2 and 4 are dominated."""
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/acc", "model/params"], ["maximize", "minimize"])
    points = [(0.90, 5e3, 1e-3), (0.95, 2e4, 2e-3), (0.85, 3e4, 3e-3), (0.70, 1e3, 4e-3), (0.94, 2.5e4, 5e-3)]
    for acc, size, lr in points:
        add(study, sweep, TrialState.COMPLETE, [acc, size], **{"optimizer.lr": lr, "optimizer": "adam"})
    add(study, sweep, TrialState.FAIL, None, "out of memory", **{"optimizer.lr": 1e-2, "optimizer": "sgd"})
    return study, sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_trials_csv_has_one_row_per_reported_trial(single: tuple[optuna.Study, Path]) -> None:
    study, sweep = single
    write_progress(study, sweep)
    rows = read_csv(sweep / "trials.csv")
    assert list(rows[0]) == ["number", "state", "value", "optimizer.lr", "optimizer", "model.width",
                             "trial_seed", "duration_s", "run_dir", "fail_reason", "job_id", "log"]
    assert [(r["number"], r["state"]) for r in rows] == [
        ("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE"), ("3", "PRUNED"), ("4", "FAIL"), ("5", "COMPLETE"),
        ("6", "RUNNING"),  # the WAITING trial 7 has not started: not a row
    ]
    assert [r["value"] for r in rows] == ["0.8", "0.85", "0.95", "0.3", "", "0.9", ""]
    assert [r["model.width"] for r in rows] == ["", "32", "", "", "", "16", ""]
    assert float(rows[1]["optimizer.lr"]) == 3e-3 and rows[1]["optimizer"] == "sgd"
    assert rows[4]["fail_reason"] == "diverged: loss is nan" and rows[0]["fail_reason"] == ""
    assert rows[2]["trial_seed"] == "102" and rows[2]["duration_s"] == "1.5"
    assert rows[2]["run_dir"] == str((sweep / "2").resolve())


@pytest.mark.parametrize(("direction", "best"), [("maximize", 2), ("minimize", 0)])
def test_best_yaml_is_the_best_trials_config_with_trial_nulled(tmp_path: Path, direction: str, best: int) -> None:
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/loss"], [direction])
    for value, lr in [(0.2, 1e-3), (0.5, 2e-3), (0.9, 3e-3), (0.4, 4e-3)]:
        add(study, sweep, TrialState.COMPLETE, [value], **{"optimizer.lr": lr})
    write_progress(study, sweep)
    expected = OmegaConf.load(sweep / str(best) / ".hydra" / "config.yaml")
    assert expected.trial.number == best  # the run dir's config still says which trial it was
    expected.trial = {"number": None, "storage": None, "study_name": None}
    assert OmegaConf.load(sweep / "best.yaml") == expected

    GlobalHydra.instance().clear()  # `--config-path <sweep_dir> --config-name best` composes it whole
    with initialize_config_dir(config_dir=str(sweep)):
        assert compose(config_name="best") == expected
    GlobalHydra.instance().clear()


def test_optimization_results_match_the_released_sweepers_format(single: tuple[optuna.Study, Path]) -> None:
    study, sweep = single
    write_progress(study, sweep)
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text()) == {
        "name": "optuna", "best_params": {"optimizer.lr": 1e-2, "optimizer": "adam"}, "best_value": 0.95,
    }


def test_multi_objective_columns_and_pareto_solutions(multi: tuple[optuna.Study, Path]) -> None:
    study, sweep = multi
    write_progress(study, sweep)
    rows = read_csv(sweep / "trials.csv")
    assert list(rows[0])[:4] == ["number", "state", "val/acc", "model/params"]
    assert [(r["val/acc"], r["model/params"]) for r in rows[:2]] == [("0.9", "5000.0"), ("0.95", "20000.0")]
    assert (rows[5]["state"], rows[5]["val/acc"], rows[5]["model/params"]) == ("FAIL", "", "")

    solutions = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["solutions"]
    assert sorted(s["values"][0] for s in solutions) == [0.70, 0.90, 0.95]
    assert {"params": {"optimizer.lr": 2e-3, "optimizer": "adam"}, "values": [0.95, 20000.0]} in solutions
    assert OmegaConf.load(sweep / "best.yaml").seed == 101  # trial 1: on the front, best in val/acc


def test_pareto_front_keeps_trials_no_other_beats_everywhere(multi: tuple[optuna.Study, Path]) -> None:
    study, _ = multi
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in results.pareto_front(complete, [True, False])] == [0, 1, 3]
    assert [t.number for t in results.pareto_front(complete, [False, True])] == [2, 3]  # 2 beats 4 both ways


def test_objectives_get_default_names_in_a_study_our_sweeper_did_not_create(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert results.objective_names(study) == ["value_0", "value_1"]


def test_without_a_complete_trial_only_trials_csv_is_written(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/acc"], ["maximize"])
    add(study, sweep, TrialState.FAIL, None, "diverged", **{"optimizer.lr": 0.1})
    write_progress(study, sweep)
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == ["optuna.db", "trials.csv"]
    assert write_report(study, sweep).read_text().count("No trial has completed yet") == 1


def test_write_progress_draws_nothing(single: tuple[optuna.Study, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Called after every batch, so it must not pay for matplotlib: importing the plots here fails."""
    study, sweep = single
    monkeypatch.setitem(sys.modules, "lightning_tune.sweeping.plots", None)
    monkeypatch.delattr(lightning_tune.sweeping, "plots")
    write_progress(study, sweep)
    with pytest.raises(ImportError):
        write_report(study, sweep)


def plot_links(report: str) -> set[str]:
    return {line.split("](plots/")[1].rstrip(")") for line in report.splitlines() if "](plots/" in line}


@pytest.mark.parametrize("study_kind", ["single", "multi"])
def test_report_embeds_every_plot_and_lists_why_trials_stopped(study_kind: str, request: pytest.FixtureRequest) -> None:
    study, sweep = request.getfixturevalue(study_kind)
    write_progress(study, sweep)
    report = write_report(study, sweep)
    assert report == sweep / "report.md"
    text = report.read_text()
    expected = {"optimization_history.png", "param_importances.png", "parallel_coordinates.png"}
    if study_kind == "multi":
        expected.add("pareto_front.png")
    assert plot_links(text) == expected == {p.name for p in (sweep / "plots").iterdir()}
    for name in expected:
        assert (sweep / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    assert pyplot.get_fignums() == []  # no figure left open in pyplot's registry
    if study_kind == "single":
        for counted in ["| COMPLETE | 4 |", "| PRUNED | 1 |", "| FAIL | 1 |", "| RUNNING | 1 |"]:
            assert counted in text
        assert "Trial 2: `val/acc` = 0.95." in text
        assert "| 3 | PRUNED | pruned after epoch 1: val/acc=0.3000 | 3 |" in text
        assert "| 4 | FAIL | diverged: loss is nan | 4 |" in text
    else:
        assert "Trial 1 (of the 3 on the Pareto front, the best in `val/acc`)" in text
        assert "| 5 | FAIL | out of memory | 5 |" in text


def test_a_failing_importance_is_a_line_in_the_report(
    single: tuple[optuna.Study, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    study, sweep = single
    (sweep / "plots").mkdir()
    (sweep / "plots" / "param_importances.png").write_bytes(PNG_MAGIC)  # from an earlier report

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no importances today")

    monkeypatch.setattr(optuna.importance, "get_param_importances", broken)
    text = write_report(study, sweep).read_text()
    assert "Not computed: fANOVA failed (RuntimeError: no importances today)." in text
    assert "param_importances.png" not in text and not (sweep / "plots" / "param_importances.png").exists()
    assert (sweep / "plots" / "optimization_history.png").is_file()


def test_importances_need_two_complete_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/acc"], ["maximize"])
    add(study, sweep, TrialState.COMPLETE, [0.5], **{"optimizer.lr": 1e-3})
    text = write_report(study, sweep).read_text()
    assert "Not computed: importances need at least 2 complete trials, the study has 1." in text
    assert plot_links(text) == {"optimization_history.png", "parallel_coordinates.png"}


def test_files_are_replaced_whole_and_no_temporary_file_stays(single: tuple[optuna.Study, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    study, sweep = single
    write_progress(study, sweep)
    write_report(study, sweep)
    assert [p for p in sweep.rglob("*.tmp")] == []

    before = (sweep / "trials.csv").read_text()
    add(study, sweep, TrialState.COMPLETE, [0.99], **{"optimizer.lr": 5e-3, "optimizer": "adam"})

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError):
        write_progress(study, sweep)
    assert (sweep / "trials.csv").read_text() == before  # the reader still has the whole old file
    assert [p for p in sweep.rglob("*.tmp")] == []


def test_parallel_coordinates_place_categories_in_order_and_numbers_on_their_scale() -> None:
    choices = CategoricalDistribution(["adam", "rmsprop", "sgd"])
    positions, ticks = plots.axis_positions(["sgd", "adam", plots.ABSENT], choices)
    assert positions[:2] == [1.0, 0.0] and math.isnan(positions[2])
    assert ticks == [(0.0, "adam"), (0.5, "rmsprop"), (1.0, "sgd")]
    positions, _ = plots.axis_positions([1e-4, 1e-3, 1e-2], FloatDistribution(1e-5, 1e-1, log=True))
    assert positions == pytest.approx([0.0, 0.5, 1.0])
    positions, _ = plots.axis_positions([8, 16, 32], IntDistribution(8, 64))
    assert positions == pytest.approx([0.0, 1 / 3, 1.0])


def report_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_report_script_regenerates_everything_from_the_database(single: tuple[optuna.Study, Path]) -> None:
    _, sweep = single
    done = report_script(str(sweep))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sweep / "report.md")
    for name in ["trials.csv", "best.yaml", "optimization_results.yaml", "report.md", "plots/parallel_coordinates.png"]:
        assert (sweep / name).is_file(), name
    assert len(read_csv(sweep / "trials.csv")) == 7


def test_report_script_reads_a_sweeps_journal_file(single: tuple[optuna.Study, Path]) -> None:
    """A sweep run with `hydra.sweeper.storage=journal:optuna.journal` has no optuna.db: the script finds the
    journal by itself, or takes it as the sweep did."""
    study, sweep = single
    journal = str(sweep / "optuna.journal")
    optuna.copy_study(from_study_name=study.study_name, from_storage=f"sqlite:///{sweep / 'optuna.db'}",
                      to_storage=JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal))))  # fmt: skip
    (sweep / "optuna.db").unlink()
    for args in ([], ["--storage", "journal:optuna.journal"], ["--storage", f"journal:{journal}"]):
        (sweep / "trials.csv").unlink(missing_ok=True)
        done = report_script(str(sweep), *args)
        assert done.returncode == 0, done.stderr
        rows = read_csv(sweep / "trials.csv")
        assert [(row["number"], row["state"]) for row in rows][:6] == [
            ("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE"), ("3", "PRUNED"), ("4", "FAIL"), ("5", "COMPLETE")
        ]
    assert "| 2 | 0.95 |" in (sweep / "report.md").read_text()


def test_report_script_rejects_bad_inputs(tmp_path: Path) -> None:
    done = report_script(str(tmp_path / "nowhere"))
    assert (done.returncode, done.stderr) == (2, f"error: sweep_dir {tmp_path / 'nowhere'}: no such directory\n")
    done = report_script(str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: --storage: {tmp_path} holds no optuna.db or optuna.journal")
    (tmp_path / "optuna.journal").write_text("not a journal\n")
    done = report_script(str(tmp_path))
    assert done.returncode == 2 and done.stderr == (
        f"error: --storage journal:{tmp_path / 'optuna.journal'}: line 1 of {tmp_path / 'optuna.journal'} is not an "
        f"Optuna journal record (another file, or a write cut short by a full disk): restore it from a copy, or "
        f"keep the study in another file\n"
    )
    assert (tmp_path / "optuna.journal").read_text() == "not a journal\n" and not (tmp_path / "report.md").exists()
    (tmp_path / "optuna.journal").unlink()
    old = tmp_path / "old" / "optuna.db"  # a sweep made by Optuna 2.10
    old.parent.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "sweep-optuna-2.10.1" / "optuna.db", old)
    done = report_script(str(old.parent))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"upgrade it with `optuna storage upgrade --storage 'sqlite:///{old}'`" in done.stderr
    done = report_script(str(tmp_path), "--storage", "journal:nowhere.journal")
    assert (done.returncode, done.stderr) == (2, "error: --storage journal:nowhere.journal: no such journal file\n")
    assert not (tmp_path / "nowhere.journal").exists()

    new_study(tmp_path, ["val/acc"], ["maximize"], name="first")
    new_study(tmp_path, ["val/acc"], ["maximize"], name="second")
    done = report_script(str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: --study-name:") and "2 studies (first, second)" in done.stderr
    assert not (tmp_path / "report.md").exists()


def test_cv_std_columns_come_from_the_trials_attr(tmp_path: Path) -> None:
    """Cross-validated trials (`cv.folds`): `cv_std` per objective, as each trial's process records it."""
    sweep = tmp_path / "sweep"
    study = new_study(sweep, ["val/acc", "model/params"], ["maximize", "minimize"])
    for value, std in ((0.9, 0.02), (0.8, 0.05)):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[value, 100.0], params={"optimizer.lr": 1e-3},
            distributions={"optimizer.lr": DISTRIBUTIONS["optimizer.lr"]},
            user_attrs={"cv_std": {"val/acc": std, "model/params": 0.0}},
        ))  # fmt: skip
    add(study, sweep, TrialState.COMPLETE, [0.7, 300.0], **{"optimizer.lr": 3e-3})  # a run without cv.folds
    write_progress(study, sweep)
    rows = read_csv(sweep / "trials.csv")
    assert list(rows[0])[2:6] == ["val/acc", "model/params", "val/acc_cv_std", "model/params_cv_std"]
    assert [(row["val/acc_cv_std"], row["model/params_cv_std"]) for row in rows] == [
        ("0.02", "0.0"), ("0.05", "0.0"), ("", "")
    ]
    report = write_report(study, sweep).read_text()  # the top trials show the folds' spread too
    header = next(line for line in report.splitlines() if line.startswith("| trial | val/acc"))
    assert "| val/acc cv_std | model/params cv_std |" in header
    assert any(line.startswith("| 0 | 0.9 | 100 | 0.02 | 0 |") for line in report.splitlines()), report


def test_no_cv_std_column_without_cross_validation(single: tuple[optuna.Study, Path]) -> None:
    study, sweep = single
    write_progress(study, sweep)
    assert not any("cv_std" in column for column in read_csv(sweep / "trials.csv")[0])
