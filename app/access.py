"""Who may reach what: signed links to a job's files, and the limit on failed API keys and logins.

**Signed links.** The web UI's players, pictures and downloads point at the REST API's own file
route, ``/api/jobs/<id>/files/<name>``, which checks the job's owner; nothing is copied into
Gradio's cache. A browser cannot add an ``Authorization`` header to ``<audio src>``, so the UI
signs each link: ``?exp=<unix time>&sig=<HMAC-SHA256 of job id, file name, owner and exp>``, keyed
with ``APP_SECRET_KEY`` (or a key generated once into ``SHARED_DATA_DIR/.secrets/media_key``). The
owner is inside the HMAC, not in the URL: the API recomputes it with the job's owner from the
database, so a link made for one key's job can never open another's, and a deleted job's links
answer 404.

**Failed keys.** :class:`FailureLimiter` counts failed API keys (REST) and failed logins (web UI)
per client address; after ``limit`` failures within ``window_s`` seconds the address gets 429
with ``Retry-After`` until the oldest of them is out of the window. While an address is over
the limit its keys are not even checked, so guessing gains nothing; successes are never counted
or delayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from urllib.parse import quote

log = logging.getLogger(__name__)

LINK_SECONDS = 3600  # how long a signed link works (the page hands out fresh ones whenever it shows a job)
LINK_BUCKET_SECONDS = 300  # expiry times are rounded up to this, so a job's links stay the same for a while
MEDIA_KEY_FILE = "media_key"  # SHARED_DATA_DIR/.secrets/<this> when APP_SECRET_KEY is not set
MEDIA_KEY_ENV = "APP_SECRET_KEY"
AUTH_FAILURE_LIMIT = 10  # failed keys or logins from one address ...
AUTH_FAILURE_WINDOW_S = 60.0  # ... within this many seconds: 429 until the oldest leaves the window
_MAX_TRACKED_CLIENTS = 10_000  # memory bound: the least recently failing addresses are forgotten first


class LinkSigner:
    """Makes and checks the signed file links the web UI hands to the browser."""

    def __init__(self, key: str | bytes, ttl_s: float = LINK_SECONDS, clock: Callable[[], float] = time.time):
        self._key = key.encode() if isinstance(key, str) else bytes(key)
        self.ttl_s = ttl_s
        self._clock = clock

    def _sig(self, job_id: str, name: str, owner: str | None, exp: int) -> str:
        message = f"{job_id}\n{name}\n{owner or ''}\n{exp}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def file_url(self, job_id: str, name: str, owner: str | None, *, download: bool = False) -> str:
        """A relative URL of ``name`` of job ``job_id`` that works for ``ttl_s`` seconds without a key."""
        exp = math.ceil((self._clock() + self.ttl_s) / LINK_BUCKET_SECONDS) * LINK_BUCKET_SECONDS
        url = (f"/api/jobs/{job_id}/files/{quote(name, safe='')}?exp={exp}"
               f"&sig={self._sig(job_id, name, owner, exp)}")
        return url + "&download=1" if download else url

    def check(self, job_id: str, name: str, owner: str | None, exp: str | None, sig: str | None) -> str:
        """``"ok"``, ``"expired"`` (authentic, but too old) or ``"invalid"`` (not made by us for this file)."""
        if not exp or not sig or not exp.isdigit() or len(exp) > 12:
            return "invalid"
        if not hmac.compare_digest(self._sig(job_id, name, owner, int(exp)).encode(), sig.encode()):
            return "invalid"
        return "ok" if int(exp) >= self._clock() else "expired"


class FailureLimiter:
    """Failed authentications per client address, with a sliding window (thread-safe)."""

    def __init__(self, limit: int = AUTH_FAILURE_LIMIT, window_s: float = AUTH_FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s = limit, window_s
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds ``client`` must wait before its next try, or None when it is under the limit."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return None
            return max(1, math.ceil(times[-self.limit] + self.window_s - now))

    def failed(self, client: str, what: str) -> int | None:
        """Record one failure of ``client`` (``what``: for the log); the wait when it is now over the limit."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque(maxlen=self.limit)
            times.append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > _MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)
            over = len(times) >= self.limit
            wait = max(1, math.ceil(times[0] + self.window_s - now)) if over else None
        if over:
            log.warning("%s from %s: %d failures within %g s; refusing that address for %d s (429)", what, client,
                        self.limit, self.window_s, wait)
        else:
            log.info("%s from %s (%d of %d allowed within %g s)", what, client, len(times), self.limit,
                     self.window_s)
        return wait
