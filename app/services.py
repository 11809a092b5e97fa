"""HTTP clients of the melody service and the vocal-mix service (the task contract in shared/DESIGN.md).

Faults are sorted into two kinds, because the job manager treats them differently:

- :class:`ServiceUnavailable`: the service cannot be reached, timed out, answered 5xx or 503
  "busy", or forgot the task (it restarted). Transient: wait, retry with backoff.
- :class:`TaskRefused` / a failed task: the service looked at the input and said no (4xx, or the
  task ended ``failed``). Permanent: the job fails with the service's code and message.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)


class ServiceUnavailable(RuntimeError):
    """The service could not be reached or could not take the request now; worth retrying.

    The message is safe to show a user: it names the service, never its internal address (the
    address is logged where the fault is found).
    """

    def __init__(self, service: str, message: str):
        super().__init__(f"{service}: {message}")
        self.service = service
        self.reason = message


class TaskRefused(ValueError):
    """The service refused the request (bad input or parameters); retrying would not help."""

    def __init__(self, service: str, code: str, message: str):
        super().__init__(message)
        self.service, self.code, self.message = service, code, message


class TaskGone(ServiceUnavailable):
    """The service no longer knows the task (it restarted); the stage must be submitted again."""


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    state: str
    progress: float
    stage: str
    outputs: dict[str, str]
    error: dict[str, str] | None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class ServiceClient:
    """One service's task API: submit, poll, cancel, health."""

    def __init__(self, name: str, base_url: str, timeout: float = 10.0, session: requests.Session | None = None,
                 token: str | None = None):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()
        if token:
            # The services take task requests from the job manager only (SERVICE_TOKEN).
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            resp = self.http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            log.warning("%s: no answer from %s %s within %g s", self.name, method, url, self.timeout)
            raise ServiceUnavailable(self.name, f"no answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            log.warning("%s: cannot reach %s (%s)", self.name, url, type(exc).__name__)
            raise ServiceUnavailable(self.name, "cannot be reached (is it running?)") from None
        if resp.status_code == 401:
            log.error("%s refused our token at %s: %s", self.name, url, _error(resp)[1])
            raise TaskRefused(self.name, "service_unauthorized", "the job manager and the service disagree on the "
                              "service token (SERVICE_TOKEN); set the same one for both, or leave it unset")
        if resp.status_code >= 500 or resp.status_code == 429:
            log.warning("%s: %s %s answered %d", self.name, method, url, resp.status_code)
            raise ServiceUnavailable(self.name, f"answered {resp.status_code}: {_error(resp)[1]}")
        return resp

    def health(self) -> dict[str, Any]:
        resp = self._call("GET", "/health")
        if resp.status_code != 200:
            raise ServiceUnavailable(self.name, f"/health answered {resp.status_code}")
        return resp.json()

    def submit(self, task_type: str, job_id: str, inputs: dict[str, str], params: dict[str, Any]) -> str:
        """Start a task; its id. TaskRefused for bad input, ServiceUnavailable when it cannot take it now."""
        resp = self._call("POST", "/v1/tasks", json={"job_id": job_id, "type": task_type, "input": inputs,
                                                      "params": params})
        if resp.status_code != 202:
            code, message = _error(resp)
            raise TaskRefused(self.name, code, message)
        return str(resp.json()["task_id"])

    def status(self, task_id: str) -> TaskStatus:
        resp = self._call("GET", f"/v1/tasks/{task_id}")
        if resp.status_code == 404:
            raise TaskGone(self.name, f"the service no longer knows task {task_id} (it restarted?)")
        if resp.status_code != 200:
            raise ServiceUnavailable(self.name, f"task status answered {resp.status_code}: {_error(resp)[1]}")
        body = resp.json()
        return TaskStatus(task_id=task_id, state=body["state"], progress=float(body.get("progress") or 0.0),
                          stage=str(body.get("stage") or ""), outputs=dict(body.get("outputs") or {}),
                          error=body.get("error"))

    def cancel(self, task_id: str) -> None:
        """Ask the service to stop the task; a service that is down or forgot it is no error here."""
        try:
            self._call("DELETE", f"/v1/tasks/{task_id}")
        except ServiceUnavailable as exc:
            log.warning("could not cancel %s task %s: %s", self.name, task_id, exc)


def _error(resp: requests.Response) -> tuple[str, str]:
    try:
        err = resp.json().get("error") or {}
        return str(err.get("code") or f"http_{resp.status_code}"), str(err.get("message") or resp.reason)
    except (ValueError, AttributeError):
        return f"http_{resp.status_code}", (resp.text or resp.reason or "")[:300]


class VocalService(ServiceClient):
    """The vocal-mix service, which also knows the vocal styles."""

    STYLES_TTL = 60.0

    def __init__(self, base_url: str, timeout: float = 10.0, token: str | None = None):
        super().__init__("vocal-mix-service", base_url, timeout, token=token)
        self._styles: list[dict[str, Any]] | None = None
        self._styles_at = 0.0

    def styles(self) -> list[dict[str, Any]]:
        """The styles (name, description, vocal_range), cached for a minute. ServiceUnavailable if down."""
        if self._styles is not None and time.monotonic() - self._styles_at < self.STYLES_TTL:
            return self._styles
        resp = self._call("GET", "/v1/styles")
        if resp.status_code != 200:
            raise ServiceUnavailable(self.name, f"/v1/styles answered {resp.status_code}")
        self._styles = list(resp.json()["styles"])
        self._styles_at = time.monotonic()
        return self._styles

    def style_names(self) -> list[str] | None:
        """The style names, or None when the service cannot be asked right now."""
        try:
            return [s["name"] for s in self.styles()]
        except ServiceUnavailable:
            return None


def melody_service(base_url: str, timeout: float = 10.0, token: str | None = None) -> ServiceClient:
    return ServiceClient("melody-service", base_url, timeout, token=token)
