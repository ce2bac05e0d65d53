"""The malformed-input corpus as test cases, for any test that feeds user files to the product.

Usage in a test module (tests/ is on ``sys.path`` under pytest)::

    from corpus_cases import CORPUS, assert_one_sentence

    @pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.file)
    def test_cli_refuses_bad_files(case): ...

``tests/corpus/manifest.csv`` is the contract: ``expect`` is ``ok`` (a valid but awkward image
that must load) or ``error`` (it must be refused with one clear sentence containing
``message_contains``). Regenerate the files with ``python tests/corpus/make_corpus.py``.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"
CORPUS_DIR = CORPUS_ROOT / "malformed"
MANIFEST = CORPUS_ROOT / "manifest.csv"


@dataclass(frozen=True)
class CorpusCase:
    file: str
    expect: str  # "ok" or "error"
    message_contains: str  # lower-case word the error message must contain ("" for ok)
    note: str

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.file

    @property
    def ok(self) -> bool:
        return self.expect == "ok"


def read_manifest() -> list[CorpusCase]:
    with MANIFEST.open(newline="") as f:
        return [CorpusCase(r["file"], r["expect"], r["message_contains"], r["note"]) for r in csv.DictReader(f)]


CORPUS = read_manifest()
CORPUS_ERRORS = [c for c in CORPUS if not c.ok]
CORPUS_OK = [c for c in CORPUS if c.ok]

_LEAKS = ("Traceback", "Error:", "Exception", "PIL", "Pillow", "<_io", "object at 0x", "errno", "File \"")


def assert_one_sentence(message: str, file_name: str | None = None) -> None:
    """A user-facing error: one line, one sentence ending with '.', no traceback or internals.

    ``file_name`` (if the message quotes it) is removed before counting sentences, since a file
    name may contain dots."""
    assert message and message == message.strip(), repr(message)
    assert "\n" not in message and "\r" not in message, repr(message)
    assert message.endswith("."), message
    assert len(message) <= 300, message
    for leak in _LEAKS:
        assert leak not in message, (leak, message)
    body = message.replace(f"'{file_name}'", "'F'") if file_name else message
    # A second sentence would show as ". X" / "! X" / "? X" before the final full stop.
    assert not re.search(r"[.!?]\s+[A-Z]", body[:-1]), message
    assert body[0].isupper(), message
