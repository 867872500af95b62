"""The King James Version text, from Debian's bible-kjv-text package, split into train and held-out.

The KJV (1611) is in the public domain; Debian ships it in `bible-kjv-text` (the verse database)
and `bible-kjv` (the `bible` program that prints it). Its copyright file: "The copyright for the
King James Version text of the Bible is expired".

The text becomes one line per chapter heading ("Genesis 1") followed by one line per verse, the
verse numbers dropped, chapters separated by a blank line. Every HELDOUT_EVERY-th chapter (from
HELDOUT_OFFSET) is held out: a fixed slice spread over the whole book rather than its last pages.
"""

import re
import shutil
import subprocess

HELDOUT_EVERY = 50
HELDOUT_OFFSET = 25
_VERSE = re.compile(r"^\s+\d+\s+(.*\S)\s*$")


def dump_bible():
    """The `bible` program's listing of Genesis 1:1 to Revelation 22:21, unwrapped."""
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv")
    out = subprocess.run(["bible", "-l0", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                         text=True, encoding="utf-8")
    return out.stdout


def chapters(listing):
    """[(heading, [verse, ...])] in canonical order."""
    result = []
    for line in listing.splitlines():
        if not line.strip():
            continue
        verse = _VERSE.match(line)
        if verse:
            if not result:
                raise ValueError("a verse before the first chapter heading: %r" % line)
            result[-1][1].append(verse.group(1))
        else:
            result.append((line.strip(), []))
    return result


def chapter_text(heading, verses):
    return heading + "\n" + "\n".join(verses) + "\n"


def split(listing):
    """(train_text, heldout_text): every chapter in exactly one of them."""
    train, heldout = [], []
    for i, (heading, verses) in enumerate(chapters(listing)):
        (heldout if i % HELDOUT_EVERY == HELDOUT_OFFSET else train).append(
            chapter_text(heading, verses))
    return "\n".join(train), "\n".join(heldout)
