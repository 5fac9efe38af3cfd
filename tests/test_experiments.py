"""`experiment=<name>`: whole setups that mirror the classic scikit-learn and Keras examples."""

import json

import pytest
from conftest import CONF, assert_learned, group_options
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightning_tune.run import build, train

# iris_logreg_grid takes one full-batch step per epoch: a few, to show that it learns
LEARNS_IN_ONE_EPOCH = {"iris_logreg_grid": ["trainer.max_epochs=5"]}


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_trains(make_cfg, tmp_path, experiment):
    cfg = make_cfg(f"experiment={experiment}", *LEARNS_IN_ONE_EPOCH.get(experiment, []))  # FAST: one epoch (per fold)
    value = train(cfg)
    assert_learned(value, build(cfg.data, "data").num_classes)
    assert json.loads((tmp_path / "metrics.json").read_text())["value"] == pytest.approx(value)


def test_iris_logreg_grid_is_gridsearchcvs_setup(make_cfg):
    cfg = make_cfg("experiment=iris_logreg_grid", fast=False)
    assert cfg.cv.folds == 5
    assert cfg.data._target_.endswith("IrisDataModule") and cfg.data.test_fraction == 0.0
    assert cfg.model._target_.endswith(".Linear")
    assert cfg.regularization._target_.endswith("SklearnRegularization")
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs  # the final model is scored
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        hydra_cfg = compose("train", ["experiment=iris_logreg_grid"], return_hydra_config=True).hydra
    assert hydra_cfg.sweeper._target_.endswith("LightningTuneSweeper")
    assert hydra_cfg.sweeper.sampler._target_ == "optuna.samplers.GridSampler"
    assert hydra_cfg.sweeper.n_trials == 12
    assert OmegaConf.to_container(hydra_cfg.sweeper.params) == {
        "regularization": {"C": "choice(0.001, 0.01, 0.1, 1, 10, 100)", "penalty": "choice(l1, l2)"}
    }


def test_mlp_l2_dropout_is_the_keras_dense_net(make_cfg):
    cfg = make_cfg("experiment=mlp_l2_dropout", fast=False)
    assert cfg.model._target_.endswith(".MLP") and (cfg.model.depth, cfg.model.width) == (1, 128)
    assert cfg.model.hidden_sizes is None and (cfg.model.activation, cfg.model.norm) == ("relu", "none")
    # Keras' l2(0.001) adds 0.001 * sum(w^2); our penalty adds l2/2 * sum(w^2)
    assert (cfg.regularization.l2, cfg.regularization.l2_mode, cfg.regularization.dropout) == (0.002, "penalty", 0.5)
    assert cfg.regularization.l1 == 0.0
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (32, 10)
    assert cfg.data._target_.endswith("DigitsDataModule")
    mnist = make_cfg("experiment=mlp_l2_dropout", "data=mnist", fast=False)  # composed only: nothing downloads
    assert mnist.data._target_.endswith("MNISTDataModule") and mnist.data.batch_size == 32


def test_resnet_adam_is_the_residual_net_with_adam(make_cfg):
    cfg = make_cfg("experiment=resnet_adam", fast=False)
    assert cfg.model._target_.endswith(".ResNet")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.max_epochs == 10 and cfg.scheduler == {}
    assert cfg.regularization.l1 == cfg.regularization.l2 == cfg.regularization.dropout == 0.0
