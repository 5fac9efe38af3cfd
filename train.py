"""Train one classifier, or a sweep of them with `-m`: `python train.py model=resnet optimizer=sgd`."""

import gc

import hydra
from omegaconf import DictConfig

from lightning_tune.schemas import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from lightning_tune.run import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        # Python's exit would collect every object that torch and Lightning made: about 1 s, for nothing.
        gc.freeze()
