"""A stand-in child for the launcher's supervision tests: ``python -m tests.launcher_child``.

LAUNCHER_CHILD_MODE: ``exit1`` (dies at once), ``config`` (exit status 2, as a bad setting does),
``sleep`` (runs until stopped).
"""

import os
import sys
import time

mode = os.environ.get("LAUNCHER_CHILD_MODE", "sleep")
if mode == "exit1":
    sys.exit(1)
if mode == "config":
    print("launcher-child: configuration error: BAD_VAR must be a number", file=sys.stderr)
    sys.exit(2)
while True:
    time.sleep(1)
