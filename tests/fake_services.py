"""Stand-ins for the melody and vocal-mix services, for testing the job manager quickly.

They are the real task HTTP edge (:func:`tmik_common.http.create_task_app`) with task types that
take a set time, report progress, honour cancel, and write small files where the real services
write theirs. Every submission is recorded, so a test can check that no job ran twice.

The vocal stand-in sings takes as the real service does (interface 6 of the takes brief): ``render``
writes ``take<n>_vocal.wav``, ``take<n>_mix.mp3`` for each of the ``takes`` (default 3) and takes.json,
the best-scored take chosen by "checks" (:data:`TAKE_SCORES`: take 2 wins), and ``select_take`` makes
another take the result (takes.json chosen_by "user", qc.json with that take's figures).
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


# Take n's figures in the stand-in: (score, word error rate, pitch accuracy). Take 2 scores best.
TAKE_SCORES = {1: (0.71, 0.12, 0.96), 2: (0.93, 0.04, 0.98), 3: (0.82, 0.08, 0.97), 4: (0.65, 0.2, 0.95),
               5: (0.77, 0.1, 0.98)}


def takes_record(count: int, seed: int = 0) -> dict:
    """takes.json as the vocal service writes it, for ``count`` takes; the best score chosen by the checks."""
    takes = [{"take": n, "seed": seed + n - 1, "phrase_seeds": [seed + n - 1] * 2,
              "resung_phrases": [] if n == 1 else [0, 1], "score": TAKE_SCORES[n][0],
              "word_error_rate": TAKE_SCORES[n][1], "pitch_accuracy": TAKE_SCORES[n][2],
              "expression": {"vibrato_share": 0.5},
              "files": {"vocal": f"take{n}_vocal.wav", "mix_mp3": f"take{n}_mix.mp3"}} for n in range(1, count + 1)]
    best = max(takes, key=lambda t: t["score"])
    return {"chosen": best["take"], "chosen_by": "checks",
            "reason": f"take {best['take']}: fewest word errors ({best['word_error_rate']}), best of {count}",
            "takes": takes}


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
        if name == "select_take":
            listed = json.loads(resolve_input(data_dir, request.input.get("takes"), "takes").read_text())["takes"]
            if request.params.get("take") not in [t["take"] for t in listed]:
                raise InvalidParams("unknown_take", f"there is no take {request.params.get('take')!r}")

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
            record = None
            if name == "render":
                record = takes_record(int(request.params.get("takes", 3)), int(request.params.get("seed", 0)))
            elif name == "select_take":
                record = json.loads(resolve_input(data_dir, request.input["takes"], "takes").read_text())
                record.update(chosen=int(request.params["take"]), chosen_by="user", reason="chosen by the user")
            out = {}
            if record is not None:
                for take in record["takes"]:
                    files.update({f"take{take['take']}_{key}": fname for key, fname in take["files"].items()})
                files["takes"] = "takes.json"
                chosen = next(t for t in record["takes"] if t["take"] == record["chosen"])
            for key, fname in files.items():
                path, rel = output_path(data_dir, folder, request.job_id, fname)
                path.parent.mkdir(parents=True, exist_ok=True)
                body = {"job": request.job_id}
                if fname == "qc.json":
                    body = {"pitch_accuracy": 0.98, "integrated_lufs": -14.0, "warnings": ["a test warning"]}
                    if record is not None:
                        body.update(pitch_accuracy=chosen["pitch_accuracy"], word_error_rate=chosen["word_error_rate"],
                                    take=chosen["take"])
                elif fname == "takes.json":
                    body = record
                elif record is not None and fname in ("mix.wav", "vocal.wav"):
                    body = {"job": request.job_id, "take": record["chosen"]}
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
        names = ["generate"] if kind == "melody" else ["render", "select_take"]
        task_types = {name: _task_type(name, data_dir, self.behaviour) for name in names}

        def extra(app):
            @app.get("/v1/styles")
            def styles():
                return {"styles": STYLES}

        # Named as the real services are, so their task folders are the real ones: tasks/<service>/.
        self.app = create_task_app(name=f"{kind}-service" if kind == "melody" else "vocal-mix-service",
                                   task_types=task_types, data_dir=data_dir, workers=4, version="test",
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


class InProcessTasks:
    """``app.cli``'s task process run in this process, so that a test's patches reach the stages."""

    def __init__(self, name: str, factory: str, data_dir: Path, **_: object) -> None:
        self.data_dir = data_dir

    def start(self) -> None: ...

    def wait_ready(self, timeout: float) -> bool:
        return True

    def stop(self, timeout: float = 5.0) -> None: ...

    def run(self, task_id: str, request: dict, *, progress, cancelled) -> dict[str, str]:
        from app import cli
        from tmik_common.isolation import TaskFailed
        from tmik_common.tasks import TaskRequest, error_of

        work = cli.pipeline_task_types()[request["type"]].prepare(TaskRequest(**request), self.data_dir)
        try:
            return work(progress)
        except Exception as exc:
            raise TaskFailed(**error_of(exc)) from exc
