"""Train one classifier, or a sweep of them with `-m`: `python train.py model=resnet optimizer=sgd`."""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # Ctrl-C waits for the start-up: see one_line_errors
import gc

gc.disable()  # while the imports come in: see lightning_tune.startup
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lightning_tune.console import accept_interrupts, one_line_errors, print_help
from lightning_tune.schemas import register_schemas
from lightning_tune.startup import first_import
from lightning_tune.trust import APP_TARGETS

register_schemas()
CONFIG_PATH, CONFIG_NAME = "conf", "train"


@hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, execution_whitelist=APP_TARGETS)
def main(cfg: DictConfig) -> float:
    with first_import("lightning_tune.run"):  # torch and Lightning
        from lightning_tune.run import run_from_hydra

    accept_interrupts()  # held by one_line_errors while Hydra starts and torch is imported
    return run_from_hydra(cfg)


if __name__ == "__main__":
    if sys.argv[1:] in (["--help"], ["-h"]):  # the same help as Hydra's, without its listing of every group (2-5 s)
        print_help(Path(__file__).parent / CONFIG_PATH, CONFIG_NAME)
        sys.exit()
    try:
        with one_line_errors():  # Hydra's composition errors and Ctrl-C
            main()
    finally:
        # Python's exit would collect every object that torch and Lightning made: about 1 s, for nothing.
        gc.freeze()
