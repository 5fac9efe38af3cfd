"""Python's garbage collector while a process of ours starts.

torch, Lightning, Hydra and Optuna make some 400,000 objects as they are imported, nearly all alive for the
process's life. The collector walks every one of them in each full collection, and their arrival alone sets
off full collections, each longer than the last: 9 of them, 0.8 s of a sweep's 4.5 s start on this project's
2-core machine, and 0.1-0.3 s for each one later. So train.py holds collections from its first line, and
once the imports are in (a sweep's driver: once its study is open; a trial's process: once it has imported
torch and Lightning), what is alive is set aside from the collector's walks for good (`gc.freeze`, as
Python's documentation suggests for a process's long-lived objects); the collector then runs as usual on
what comes after. Freed by reference counting, a set-aside object still goes; only a cycle of them stays.
"""

import gc
import sys
from contextlib import contextmanager
from typing import Iterator


def imports_done() -> None:
    """End train.py's hold: set what is alive now aside from the collector's walks, and let it run again."""
    gc.freeze()
    gc.enable()


@contextmanager
def first_import(module: str) -> Iterator[None]:
    """Around the import of `module` (torch and Lightning, in a trial's process): the first time in this
    process, collections are held while the block imports, then `imports_done`; later, when nothing is left to
    import, the collector just runs on."""
    imported = module in sys.modules
    if not imported:
        gc.disable()
    try:
        yield
    finally:
        if imported:
            gc.enable()
        else:
            imports_done()
