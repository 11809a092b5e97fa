"""Turning a musician's upload and choices into a queued job: one path for the API and the UI.

:func:`parse_params` checks the Create-tab parameters and returns the job's ``params``;
:func:`store_upload` keeps the upload as ``input/<job_id>/original.<ext>`` and writes the working copy
every stage reads, ``input/<job_id>/background.wav`` (the job's ``input_file``); :func:`submit_job` does
both and queues the job; :func:`sweep_orphan_uploads` removes input folders an interrupted upload left
without a job. Every refusal is a :class:`SubmitError` with a
stable ``code``, the ``field`` it concerns and a message that says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tmik_common.audio import AudioError, write_working_copy
from tmik_common.lyrics import MAX_FILE_BYTES as MAX_LYRICS_FILE_BYTES
from tmik_common.lyrics import LyricsError, parse_lyrics
from tmik_common.lyrics import read_lyrics_file as read_lyrics_text
from tmik_common.tasks import MAX_SEED
from tmik_common.tempo import TEMPO_LEVELS, tempo_override, time_signature_override

from . import jobs
from .config import Config
from .models import Job

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
ORIGINAL_STEM = "original"  # input/<job>/original.<ext>: the upload as the user sent it
WORKING_NAME = "background.wav"  # input/<job>/background.wav: what every stage reads (Job.input_file)
MAX_NAME_CHARS = 200
# An input folder with no job row whose newest file is older than this is an upload a crash
# interrupted. An upload in progress writes its files continuously, and its job row follows within
# seconds of the last write (longer only while the database is locked: DB_RETRY_SECONDS, 300 s).
ORPHAN_UPLOAD_SECONDS = 900.0
ORPHAN_SWEEP_INTERVAL_SECONDS = 600.0
# Job ids are UUIDs: the sweep leaves any other folder alone (e.g. input/demo/ of the services' examples).
_JOB_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEFAULT_SENSITIVITY = 0.5
DEFAULT_RANDOMNESS = 0.5
DEFAULT_STYLE = "pop_bright"
MAX_LYRICS_CHARS = 20_000
_STYLE_RE = re.compile(r"[a-z][a-z0-9_]{0,40}")
STYLE_PATTERN = "^" + _STYLE_RE.pattern + "$"  # the same rule as a JSON-schema pattern (API document)
# The parameters a musician sets (form fields of the API and the Create tab; keys of ``params``).
PARAM_NAMES = frozenset({"sensitivity", "randomness", "style", "seed", "lyrics", "target_lufs", "tempo",
                         "time_signature", "takes"})
# How many takes the voice sings (each with its own seed; the checks choose one, all are kept).
# Left out: the vocal service's default (TAKES, 3).
MIN_TAKES, MAX_TAKES, DEFAULT_TAKES = 1, 5, 3



def accepted_input(cfg: Config) -> str:
    """What a musician is told on the Create tab and in the API document about what to upload."""
    longest = cfg.max_audio_seconds
    span = f"{longest / 60:g} min" if longest >= 60 else f"{longest:g} s"
    return (f"WAV, FLAC, MP3 or OGG; {cfg.min_audio_seconds:g} s to {span}; any sample rate from 8 to 192 kHz, "
            "mono or stereo")


class SubmitError(ValueError):
    """A refused submission: ``code`` (stable), ``field`` (the parameter at fault) and a message."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status

    def to_dict(self) -> dict[str, Any]:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


def _number(raw: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SubmitError("invalid_param", f"{name} must be a number from {low:g} to {high:g}, got {value!r}",
                          name) from None
    if not low <= number <= high:  # also refuses NaN
        raise SubmitError("invalid_param", f"{name} must be from {low:g} to {high:g}, got {value!r}", name)
    return number


def parse_params(raw: Mapping[str, Any], styles: list[str] | None = None) -> dict[str, Any]:
    """The job's parameters from form or JSON values (strings are accepted for numbers).

    ``sensitivity`` (Beat Detection Sensitivity) and ``randomness`` (Creative Randomness) 0..1,
    ``style`` (Vocal Style; checked against ``styles`` when the list is known), ``seed``
    (0..MAX_SEED; empty: a random one, recorded so the take can be repeated), ``lyrics``
    (text with optional [Section] tags; empty: a vocalise), ``target_lufs`` (-30..-6), ``tempo``
    (BPM 30..300, or "half"/"double" the detected tempo; empty: automatic) and ``time_signature``
    ("2/4", "3/4", "4/4", "6/8", "12/8"; empty: automatic), which re-run the analysis at that level, and
    ``takes`` (1..5 takes sung, the best kept as the result; empty: the vocal service's default).
    """
    known = set(PARAM_NAMES)
    # Every name outside PARAM_NAMES is refused, "file" too: callers take the upload out of ``raw``
    # themselves, so a "file" left here is one this request cannot use (a re-run reuses the old input).
    unknown = sorted(set(raw) - known)
    if unknown:
        hint = "; a re-run uses the old job's input, so it takes no file" if "file" in unknown else ""
        raise SubmitError("unknown_param", f"unknown parameter(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(sorted(known))}{hint}", unknown[0])
    params: dict[str, Any] = {
        "sensitivity": _number(raw, "sensitivity", DEFAULT_SENSITIVITY, 0.0, 1.0),
        "randomness": _number(raw, "randomness", DEFAULT_RANDOMNESS, 0.0, 1.0),
    }
    style = raw.get("style")
    if style is None or style == "":
        style = DEFAULT_STYLE
    if not isinstance(style, str) or not _STYLE_RE.fullmatch(style) or (styles is not None and style not in styles):
        listed = f"; one of: {', '.join(styles)}" if styles else ""
        raise SubmitError("unknown_style", f"style {style!r} is not a vocal style{listed}", "style")
    params["style"] = style
    seed = raw.get("seed")
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        params["seed"] = int.from_bytes(os.urandom(4), "big") % (MAX_SEED + 1)
    else:
        try:
            value = float(seed) if not isinstance(seed, bool) else None
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not value.is_integer() or not 0 <= value <= MAX_SEED:
            raise SubmitError("invalid_param", f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}",
                              "seed")
        params["seed"] = int(value)
    lyrics = raw.get("lyrics")
    if lyrics is None:
        lyrics = ""
    if not isinstance(lyrics, str):
        raise SubmitError("invalid_param", "lyrics must be text", "lyrics")
    if len(lyrics) > MAX_LYRICS_CHARS:
        raise SubmitError("lyrics_too_long", f"lyrics are {len(lyrics)} characters; at most {MAX_LYRICS_CHARS} "
                          "are accepted", "lyrics")
    if lyrics.strip():
        try:
            parse_lyrics(lyrics)
        except LyricsError as exc:
            raise SubmitError(exc.code, str(exc), "lyrics") from None
        params["lyrics"] = lyrics
    if raw.get("target_lufs") not in (None, ""):
        params["target_lufs"] = _number(raw, "target_lufs", -14.0, -30.0, -6.0)
    for name, check in (("tempo", tempo_override), ("time_signature", time_signature_override)):
        try:
            value = check(raw.get(name), name)
        except ValueError as exc:
            raise SubmitError("invalid_param", str(exc), name) from None
        if value is not None:
            params[name] = value
    takes = _whole(raw, "takes", MIN_TAKES, MAX_TAKES)
    if takes is not None:
        params["takes"] = takes
    return params


def _whole(raw: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """A whole-number parameter from ``low`` to ``high`` (text or a number; "3.0" and 3.0 count); None when
    it is left out."""
    value = raw.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not number.is_integer() or not low <= number <= high:
        raise SubmitError("invalid_param", f"{name} must be a whole number from {low} to {high}, got {value!r}",
                          name)
    return int(number)


def safe_filename(name: str) -> str:
    """The base name of an uploaded file, without folders or odd characters (for display only)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^\w.\- ()]", "_", base).strip(" .")
    if len(base) > MAX_NAME_CHARS:  # shorten the name, never the extension (it decides what is accepted)
        stem, ext = os.path.splitext(base)
        if len(ext) > 16:  # no real extension, just a dot in a long name
            stem, ext = base, ""
        base = stem[:MAX_NAME_CHARS - len(ext)].rstrip(" .") + ext
    return base or "upload"


@dataclass(frozen=True)
class StoredInput:
    rel_path: str  # the working copy, relative to SHARED_DATA_DIR (Job.input_file)
    name: str  # the user's file name, made safe
    duration: float
    sample_rate: int  # of the upload


def _audio_refusal(exc: AudioError, name: str) -> SubmitError:
    """An AudioError about an upload as the user sees it: about their file, by its name (the loader
    only knows our copy of it)."""
    message = exc.message if f"'{name}'" in exc.message else f"{name}: {exc.message}"
    return SubmitError(exc.code, message, "file")


def _working_copy(cfg: Config, original: Path, name: str) -> tuple[Path, float, int]:
    """Check ``original`` and write its working copy beside it: (the copy, duration, the upload's sample
    rate). SubmitError when the audio cannot be used."""
    try:
        copy = write_working_copy(original, original.with_name(WORKING_NAME), min_seconds=cfg.min_audio_seconds,
                                  max_seconds=cfg.max_audio_seconds, name=name)
    except AudioError as exc:
        raise _audio_refusal(exc, name) from None
    return copy.path, copy.duration, copy.source_sample_rate


def store_upload(cfg: Config, job_id: str, stream: BinaryIO, filename: str) -> StoredInput:
    """Keep an upload as ``input/<job_id>/original.<ext>`` and, if it is usable audio, write its working
    copy ``input/<job_id>/background.wav`` (at most 48 kHz and 2 channels; see
    :func:`tmik_common.audio.write_working_copy`), the file every stage reads.

    The size limit is enforced while copying, so an oversized upload never fills the disk; the audio
    check reads the header first, so a decompression bomb is refused before it is decoded. On any
    refusal the job's input folder is removed again.
    """
    name = safe_filename(filename)
    ext = Path(name).suffix.lower()
    if ext not in AUDIO_EXTENSIONS:
        raise SubmitError("unsupported_format", f"{name!r} is not a supported audio file; upload "
                          f"{accepted_input(cfg)}", "file", 415)
    folder = cfg.shared_data_dir / "input" / job_id
    folder.mkdir(parents=True, exist_ok=False)
    original = folder / f"{ORIGINAL_STEM}{ext}"
    try:
        written = 0
        with open(original, "wb") as out:
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > cfg.max_upload_bytes:
                    raise SubmitError("file_too_large", f"the upload is larger than the "
                                      f"{cfg.max_upload_bytes / 1048576:.0f} MB limit (MAX_UPLOAD_MB); "
                                      "upload a shorter track or a compressed format (FLAC, MP3)", "file", 413)
                out.write(chunk)
        working, duration, rate = _working_copy(cfg, original, name)
        return StoredInput(rel_path=working.relative_to(cfg.shared_data_dir).as_posix(), name=name,
                           duration=duration, sample_rate=rate)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def submit_job(cfg: Config, sessions: sessionmaker[Session], stream: BinaryIO, filename: str,
               raw_params: Mapping[str, Any], *, owner: str | None = None,
               styles: list[str] | None = None) -> Job:
    """Check the parameters, store the audio, queue the job. SubmitError on any refusal."""
    params = parse_params(raw_params, styles)
    job_id = str(uuid.uuid4())
    stored = store_upload(cfg, job_id, stream, filename)
    params["input_seconds"] = round(stored.duration, 2)
    try:
        job = jobs.create_job(sessions, job_id=job_id, input_file=stored.rel_path, input_name=stored.name,
                              params=params, owner=owner)
    except BaseException:
        shutil.rmtree(cfg.shared_data_dir / "input" / job_id, ignore_errors=True)
        raise
    log.info("job %s queued: %s (%.1f s), style %s, seed %d", job.id, stored.name, stored.duration,
             params["style"], params["seed"])
    return job


def job_folders(cfg: Config, job_id: str) -> list[Path]:
    """Every folder that holds a job's files (its input and both services' results)."""
    return [cfg.shared_data_dir / sub / job_id for sub in ("input", "melody_results", "vocal_results")]


def original_upload(cfg: Config, job: Job) -> Path | None:
    """The job's upload as the user sent it (``input/<job>/original.<ext>``); None for a job stored before
    uploads got a working copy (its ``input_file`` is the upload itself)."""
    folder = cfg.shared_data_dir / "input" / job.id
    return next((p for ext in AUDIO_EXTENSIONS if (p := folder / f"{ORIGINAL_STEM}{ext}").is_file()), None)


def resolve_artifact(cfg: Config, job: Job, name: str) -> Path | None:
    """The file behind artifact ``name`` of ``job``, only if it lies inside one of the job's folders.
    ``input`` is the upload as the user sent it."""
    files = dict(job.artifacts or {})
    if "input" not in files:
        original = original_upload(cfg, job)
        files["input"] = job.input_file if original is None else original.relative_to(cfg.shared_data_dir).as_posix()
    rel = files.get(name)
    if not isinstance(rel, str):
        return None
    path = (cfg.shared_data_dir / rel).resolve()
    if not any(path.is_relative_to(folder.resolve()) for folder in job_folders(cfg, job.id)):
        return None
    return path if path.is_file() else None


def list_artifacts(cfg: Config, job: Job) -> list[tuple[str, Path]]:
    """Every file of ``job`` that can be served, as (artifact name, path): its input first, then its
    artifacts by name; names whose file is missing or lies outside the job's folders are left out."""
    names = ["input"] + sorted(n for n in (job.artifacts or {}) if n != "input")
    found = []
    for name in names:
        path = resolve_artifact(cfg, job, name)
        if path is not None:
            found.append((name, path))
    return found


def read_lyrics_file(stream: BinaryIO, filename: str = "lyrics.txt") -> str:
    """The text of an uploaded lyrics file, decoded by :func:`tmik_common.lyrics.read_lyrics_file`'s rules
    (UTF-8 with or without a byte-order mark, UTF-16 with one, else latin-1; 100 kB at most)."""
    with tempfile.TemporaryDirectory(prefix="lyrics-") as tmp:
        path = Path(tmp) / safe_filename(filename)  # the name its messages show
        with open(path, "wb") as out:
            out.write(stream.read(MAX_LYRICS_FILE_BYTES + 1))
        try:
            return read_lyrics_text(path)
        except LyricsError as exc:
            raise SubmitError(exc.code, str(exc), "lyrics_file") from None


def params_from_json(body: Any) -> dict[str, Any]:
    """Parameters from a JSON body: an object whose values have the documented JSON types
    (numbers as numbers, ``seed`` a whole number, ``style``, ``lyrics`` and ``time_signature`` text,
    ``tempo`` a number or "half"/"double"; null: the default).
    Names are checked by :func:`parse_params`."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise SubmitError("invalid_body", "the body must be a JSON object of parameters", None, 400)
    for name, value in body.items():
        if name not in PARAM_NAMES or value is None:
            continue
        if name in ("style", "lyrics", "time_signature"):
            ok, kind = isinstance(value, str), "text"
        elif name == "tempo":
            ok = value in TEMPO_LEVELS or (isinstance(value, int | float) and not isinstance(value, bool))
            kind = "a number of beats per minute or 'half' or 'double'"
        elif name in ("seed", "takes"):  # JSON Schema counts 7.0 as an integer too
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                              and value.is_integer())
            kind = "a whole number"
        else:
            ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        if not ok:
            raise SubmitError("invalid_param", f"{name} must be {kind}, got {value!r}", name)
    return dict(body)


def copy_input(cfg: Config, job: Job, job_id: str) -> Path:
    """Copy ``job``'s upload and working copy into job ``job_id``'s own input folder, so deleting either job
    leaves the other whole; the new working copy (its ``input_file``). SubmitError ``input_missing`` (409)
    when the old input is gone. The caller removes ``input/<job_id>/`` when it does not queue the job."""
    source = (cfg.shared_data_dir / job.input_file).resolve()
    if not source.is_relative_to((cfg.shared_data_dir / "input" / job.id).resolve()) or not source.is_file():
        raise SubmitError("input_missing", f"the input of job {job.id} is no longer there; upload the track "
                          "again", "file", 409)
    original = original_upload(cfg, job)
    folder = cfg.shared_data_dir / "input" / job_id
    folder.mkdir(parents=True, exist_ok=False)
    if original is not None:
        shutil.copyfile(original, folder / original.name)
        working = folder / WORKING_NAME
        shutil.copyfile(source, working)
        return working
    # A job stored before working copies: its input is the upload; make the working copy now.
    kept = folder / f"{ORIGINAL_STEM}{source.suffix.lower()}"
    shutil.copyfile(source, kept)
    return _working_copy(cfg, kept, job.input_name or kept.name)[0]


def changed_params(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The musician's parameters that differ between two jobs: {name: {"from", "to"}}."""
    return {name: {"from": old.get(name), "to": new.get(name)} for name in sorted(PARAM_NAMES)
            if old.get(name) != new.get(name)}


def describe_changes(changes: Mapping[str, Mapping[str, Any]]) -> str:
    """``changed_params`` in words for a job's history: "style ballad, seed 7"."""
    words = [f"{name} {'default' if c.get('to') is None else c['to']}" for name, c in changes.items()
             if name != "lyrics"]
    if "lyrics" in changes:
        words.append("new lyrics")
    return ", ".join(words) or "nothing changed"


def rerun_job(cfg: Config, sessions: sessionmaker[Session], job: Job, overrides: Mapping[str, Any], *,
              owner: str | None = None, styles: list[str] | None = None) -> Job:
    """Queue a new job on ``job``'s input with its parameters, changed by ``overrides``: a re-roll, recorded as
    the next version of ``job``'s song.

    The upload and its working copy are copied into the new job's own input folder (:func:`copy_input`). The
    old seed is kept unless ``overrides`` names one (null or "": a new random seed), so a re-run with another
    style is the same melody sung differently.
    """
    raw: dict[str, Any] = {k: v for k, v in (job.params or {}).items() if k in PARAM_NAMES}
    raw.update(overrides)
    params = parse_params(raw, styles)
    job_id = str(uuid.uuid4())
    try:
        working = copy_input(cfg, job, job_id)
        if "input_seconds" in (job.params or {}):
            params["input_seconds"] = job.params["input_seconds"]
        diff = changed_params(job.params or {}, params)
        params["edit"] = {"kind": "rerun", "from": job.id, "changes": diff}
        made_as = f"re-run ({describe_changes(diff)})"
        new = jobs.create_job(sessions, job_id=job_id, input_file=working.relative_to(cfg.shared_data_dir).as_posix(),
                              input_name=job.input_name, params=params, owner=owner, parent_id=job.id,
                              made_as=made_as)
    except BaseException:
        shutil.rmtree(cfg.shared_data_dir / "input" / job_id, ignore_errors=True)
        raise
    log.info("job %s queued as a re-run of %s (version %d): style %s, seed %d", new.id, job.id, new.version,
             params["style"], params["seed"])
    return new


def _newest_change(folder: Path) -> float:
    """The latest modification time of ``folder`` or anything in it (an upload in progress keeps it fresh)."""
    newest = folder.lstat().st_mtime
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            with contextlib.suppress(OSError):  # removed meanwhile
                newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
    return newest


def sweep_orphan_uploads(cfg: Config, sessions: sessionmaker[Session], *,
                         min_age_seconds: float = ORPHAN_UPLOAD_SECONDS) -> list[str]:
    """Remove the ``input/<id>/`` folders an upload interrupted by a crash left behind: named like a job id,
    no job row has that id, and nothing in the folder changed for ``min_age_seconds``. A folder with a job
    row is never touched, nor one written to recently (an upload in progress). Returns the ids removed."""
    root = cfg.shared_data_dir / "input"
    now = time.time()
    stale: dict[str, Path] = {}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or not _JOB_ID_RE.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            if now - _newest_change(Path(entry.path)) >= min_age_seconds:
                stale[entry.name] = Path(entry.path)
    names = sorted(stale)
    known: set[str] = set()
    with sessions() as s:
        for i in range(0, len(names), 500):
            known.update(s.scalars(select(Job.id).where(Job.id.in_(names[i:i + 500]))))
    removed = [name for name in names if name not in known]
    for name in removed:
        shutil.rmtree(stale[name], ignore_errors=True)
    if removed:
        log.info("removed %d input folder(s) left without a job by interrupted uploads: %s", len(removed),
                 ", ".join(removed))
    return removed


def start_upload_sweeper(cfg: Config, sessions: sessionmaker[Session], *,
                         interval_seconds: float = ORPHAN_SWEEP_INTERVAL_SECONDS) -> threading.Event:
    """Run :func:`sweep_orphan_uploads` now, then every ``interval_seconds`` in a daemon thread (the app
    calls it at start). Set the returned event to stop the thread."""
    stop = threading.Event()

    def sweep() -> None:
        try:
            sweep_orphan_uploads(cfg, sessions)
        except Exception:  # a database that is briefly away: the next round tries again
            log.exception("the sweep of interrupted uploads failed; it runs again in %.0f s", interval_seconds)

    def loop() -> None:
        while not stop.wait(interval_seconds):
            sweep()

    sweep()
    threading.Thread(target=loop, name="upload-sweeper", daemon=True).start()
    return stop
