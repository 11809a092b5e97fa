"""Stand-ins for the melody and vocal-mix services, for testing the job manager quickly.

They are the real task HTTP edge (:func:`tmik_common.http.create_task_app`) with task types that
take a set time, report progress, honour cancel, and write small files where the real services
write theirs. Every submission is recorded, so a test can check that no job ran twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.serving import make_server

from tmik_common.http import create_task_app
from tmik_common.tasks import InvalidParams, TaskRequest, TaskType, output_path, resolve_input

STYLES = [{"name": "pop_bright", "description": "Bright pop lead.", "vocal_range": [55, 72]},
          {"name": "low_warm", "description": "Low, warm voice.", "vocal_range": [43, 60]}]


@dataclass
class FakeBehaviour:
    seconds: float = 0.3  # how long one task takes
    refuse: str | None = None  # an error code to refuse every task with (422)
    submissions: Counter = field(default_factory=Counter)  # (task type, job id) -> times submitted
    params: list = field(default_factory=list)  # (task type, job id, params) per submission
    inputs: list = field(default_factory=list)  # (task type, job id, input paths) per submission
    lock: threading.Lock = field(default_factory=threading.Lock)


def _task_type(name: str, data_dir: Path, behaviour: FakeBehaviour) -> TaskType:
    def prepare(request: TaskRequest, data_dir: Path):
        for rel in request.input.values():
            resolve_input(data_dir, rel, "input")
        if behaviour.refuse:
            raise InvalidParams(behaviour.refuse, f"refused by the test ({behaviour.refuse})")

        def work(progress) -> dict[str, str]:
            with behaviour.lock:  # counted where it runs: the runner prepares a task again to run it
                behaviour.submissions[(name, request.job_id)] += 1
                behaviour.params.append((name, request.job_id, dict(request.params)))
                behaviour.inputs.append((name, request.job_id, dict(request.input)))
            steps = 10
            for i in range(steps):
                progress("working", i / steps)
                time.sleep(behaviour.seconds / steps)
            if name == "generate":
                files = {"analysis": "analysis.json", "melody": "melody.mid", "melody_json": "melody.json"}
                folder = "melody_results"
            else:
                files = {"mix": "mix.wav", "vocal": "vocal.wav", "qc": "qc.json"}
                folder = "vocal_results"
            out = {}
            for key, fname in files.items():
                path, rel = output_path(data_dir, folder, request.job_id, fname)
                path.parent.mkdir(parents=True, exist_ok=True)
                body = {"pitch_accuracy": 0.98, "integrated_lufs": -14.0, "warnings": ["a test warning"]} \
                    if fname == "qc.json" else {"job": request.job_id}
                path.write_text(json.dumps(body))
                out[key] = rel
            progress("done", 1.0)
            return out

        return work

    return TaskType(name=name, prepare=prepare)


class FakeService:
    """One fake service served on 127.0.0.1:``port`` (0: any free port) in a thread."""

    def __init__(self, kind: str, data_dir: Path, behaviour: FakeBehaviour | None = None, port: int = 0):
        self.behaviour = behaviour or FakeBehaviour()
        task = _task_type("generate" if kind == "melody" else "render", data_dir, self.behaviour)

        def extra(app):
            @app.get("/v1/styles")
            def styles():
                return {"styles": STYLES}

        # Named as the real services are, so their task folders are the real ones: tasks/<service>/.
        self.app = create_task_app(name=f"{kind}-service" if kind == "melody" else "vocal-mix-service",
                                   task_types={task.name: task}, data_dir=data_dir, workers=4, version="test",
                                   extra_routes=extra if kind == "vocal" else None)
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def runner(self):
        return next(iter(v for v in self.app.extensions.values() if hasattr(v, "runner"))).runner

    def stop(self) -> None:
        """Stop as a service does on SIGTERM: running tasks end interrupted, queued ones stay queued."""
        self.server.shutdown()
        self.server.server_close()
        self.runner.close(cancel=True, wait=True, timeout=5)
