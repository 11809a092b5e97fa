"""Entry point of a task process (``python -m tmik_common.task_child SPEC``), started by
:class:`tmik_common.isolation.TaskProcess`; not for people.

It asks for the parent-death signal first, before importing anything heavy, so a service killed
with ``kill -9`` at any moment takes its task processes with it.
"""

import json
import signal
import sys

from tmik_common.procs import die_with_parent


def main() -> None:
    spec = json.loads(sys.argv[1])
    die_with_parent(signal.SIGKILL, parent=spec["parent"])  # exits if that parent is already gone
    from tmik_common.isolation import child_main

    child_main(spec)


if __name__ == "__main__":
    main()
