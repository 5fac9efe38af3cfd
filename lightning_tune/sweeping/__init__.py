"""Everything that talks to Optuna: the sweeper, the trial side (pruning), results and reports."""
