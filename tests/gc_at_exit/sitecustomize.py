"""On PYTHONPATH (tests/test_startup.py): every Python process appends, at its exit, its pid and whether its
garbage collector was on, as a JSON line to $GC_AT_EXIT_FILE."""

import atexit
import gc
import json
import os


@atexit.register
def record() -> None:
    with open(os.environ["GC_AT_EXIT_FILE"], "a") as file:
        file.write(json.dumps({"pid": os.getpid(), "enabled": gc.isenabled()}) + "\n")
