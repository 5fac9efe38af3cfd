"""The limit: one process, an in-memory Optuna study, a hand-written loop; the data loaded once, no logger,
no checkpoint. `python limit.py [--trials 20]`."""

import argparse

import optuna
import pytorch_lightning as pl

from common import FitTimer, PlainMLP, digits_loaders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    train, val = digits_loaders(64)
    for _ in range(args.trials):
        trial = study.ask()
        lr, dropout = trial.suggest_float("lr", 1e-4, 1e-1, log=True), trial.suggest_float("dropout", 0.0, 0.5)
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[FitTimer()],
        )  # fmt: skip
        trainer.fit(PlainMLP(lr, dropout), train, val)
        study.tell(trial, trainer.callback_metrics["val_acc"].item())


if __name__ == "__main__":
    main()
