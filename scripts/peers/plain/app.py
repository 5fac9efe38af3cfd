"""The plain setup a user would otherwise write: a Hydra app, the released Optuna sweeper, a plain
LightningModule. `python app.py -m` runs the sweep of conf/config.yaml."""

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/peers: common.py
from common import FitTimer, PlainMLP, digits_loaders  # noqa: E402


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    pl.seed_everything(cfg.seed)
    train, val = digits_loaders(cfg.batch_size)
    trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator="cpu", callbacks=[FitTimer()], enable_progress_bar=False)
    trainer.fit(PlainMLP(cfg.lr, cfg.dropout, cfg.width), train, val)
    return trainer.callback_metrics["val_acc"].item()


if __name__ == "__main__":
    main()
