"""Personal-data scrubbing for the few text values a connector keeps, and for every error message.

Connectors read only the columns their mapping names (whitelist): free-text
narratives and person columns are never read, so never stored. What is read
and may carry text (an address, a raw category that is not recognised) goes
through :func:`scrub` before it reaches a log, a report or the store.
"""

from __future__ import annotations

import re

__all__ = ["PATTERNS", "looks_like_category", "scrub", "shown"]

_TITLE = r"(?:M\.|Mme|Mlle|Mr\.?|Mrs\.?|Ms\.?|Dr\.?|Monsieur|Madame|Mademoiselle|Maître|Me)"
_NAME = r"[A-ZÀ-Þ][A-Za-zÀ-ÿ'\-]+"

#: (label, pattern) in the order they are applied: the most specific first.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    # Dates of birth and any full date next to a birth word, then any dd/mm/yyyy-like date.
    ("date", re.compile(r"(?i)\b(?:n[ée]e?\s+le|DOB|date\s+de\s+naissance|born)\s*:?\s*[\d./ -]{6,10}")),
    ("date", re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)\d{2}\b")),
    ("date", re.compile(r"\b(?:19|20)\d{2}-\d{2}-\d{2}\b")),
    # Phone numbers: French (0X XX XX XX XX, +33 X ...), and international +CC groups.
    ("phone", re.compile(r"(?:\+\d{1,3}[\s.-]?)?\(?0?\d\)?(?:[\s.-]?\d{2}){4}\b")),
    ("phone", re.compile(r"\+\d{1,3}(?:[\s.-]?\d{2,4}){2,5}\b")),
    # Licence plates: French SIV AA-123-AA, old FNI 1234 AB 13, and generic letters-digits mixes.
    ("plate", re.compile(r"\b[A-Z]{2}[\s-]?\d{3}[\s-]?[A-Z]{2}\b")),
    ("plate", re.compile(r"\b\d{1,4}[\s-]?[A-Z]{1,3}[\s-]?(?:\d{2}|2A|2B)\b")),
    ("plate", re.compile(r"\b(?=[A-Z0-9]{6,8}\b)(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z]{2})[A-Z0-9]+\b")),
    # Names after a title, and "nom: X" style fields.
    ("name", re.compile(rf"\b{_TITLE}\s+{_NAME}(?:\s+{_NAME})?")),
    (
        "name",
        re.compile(
            rf"(?i)\b(?:nom|name|pr[ée]nom|victime|suspect|t[ée]moin|mis en cause)\s*:?\s*"
            rf"{_NAME}(?:\s+{_NAME})?"
        ),
    ),
]


# Any two capitalised words in a row may be a first and last name: scrubbed too. This also
# blanks some place names ("Cours Belsunce"); in reports and logs, privacy wins over detail.
PATTERNS.append(("name", re.compile(rf"\b{_NAME}(?:[\s-]+{_NAME})+")))


def looks_like_category(text: str) -> bool:
    """Short, no digits, at most four words, nothing to scrub: safe to echo in a report."""
    words = text.split()
    return (
        0 < len(text) <= 40 and len(words) <= 4 and not any(c.isdigit() for c in text) and scrub(text) == text
    )


def shown(text: str) -> str:
    """How a report quotes a raw value it refused: the value if it looks like a category, else a summary."""
    if looks_like_category(text):
        return repr(text)
    return f"(free text, {len(text)} characters, not shown)"


def scrub(text: str, max_len: int = 200) -> str:
    """``text`` with e-mails, phones, plates, dates and titled names as ``[label]``, cut to ``max_len``."""
    out = text
    for label, pattern in PATTERNS:
        out = pattern.sub(f"[{label}]", out)
    return out[:max_len]
