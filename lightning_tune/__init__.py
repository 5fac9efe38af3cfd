"""lightning-tune: tune PyTorch Lightning classifiers with Hydra sweeps.

Kept free of heavy imports: Hydra imports this package while it discovers plugins.
The entry point is `lightning_tune.run.train(cfg)`.
"""

__version__ = "0.1.0"
