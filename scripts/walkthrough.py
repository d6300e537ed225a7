"""Run every command of docs/walkthrough.md top to bottom in a fresh folder and paste what each printed back in place.

A command whose output is regenerated sits in a console block between two markers::

    <!-- output keep=":9; /^final evaluation/:" -->
    ```console
    $ .venv/bin/python -m theory.predict ...
    (output, rewritten by this script)
    ```
    <!-- /output -->

``keep`` (optional; default: every line) trims the output: items separated by ``;``, each a Python slice of line
indices (``:9``, ``-3:``), ``/REGEX/`` (the lines matching it) or ``/REGEX/:`` (from the first line matching it to
the end). Dropped stretches become one ``…`` line. README.md and docs/tools.md may hold marked blocks too: a command
the walkthrough already ran takes that output (trimmed by its own ``keep``), any other is run after the walkthrough.
``<!-- machine -->…<!-- /machine -->`` is replaced by the machine, the versions and the total time.

Commands run with ``bash -c`` in the work folder (a new temporary folder unless ``--workdir``), where ``.venv`` links
to this checkout's, stdout and stderr together and piped, as in a batch job. The files are rewritten only when every
command succeeded; each command's full output stays in WORKDIR/outputs/. Usage::

    nice -n 19 .venv/bin/python scripts/walkthrough.py               # regenerate (a digits run and a branch)
    .venv/bin/python scripts/walkthrough.py --list                   # the commands, nothing run
    .venv/bin/python scripts/walkthrough.py --reuse WORKDIR          # a changed keep=: re-trim a run's saved outputs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
ALSO = (ROOT / "README.md", ROOT / "docs" / "tools.md")

BLOCK = re.compile(r'(?P<open><!-- output(?: keep="(?P<keep>[^"]*)")? -->\n```console\n)'
                   r'(?P<body>.*?)(?P<close>```\n<!-- /output -->)', re.S)
MACHINE = re.compile(r"(<!-- machine -->)(.*?)(<!-- /machine -->)", re.S)


@dataclass
class Block:
    path: Path
    span: tuple[int, int]   # of the body inside the file's text
    command: str
    keep: str


def blocks(path: Path) -> list[Block]:
    """The marked console blocks of ``path``, in order; each holds exactly one ``$ `` command (its first line)."""
    text = path.read_text()
    out = []
    for m in BLOCK.finditer(text):
        first = m.group("body").split("\n", 1)[0]
        if not first.startswith("$ "):
            raise SystemExit(f"{path.name}: a marked block must start with '$ COMMAND', not {first!r}")
        if sum(ln.startswith("$ ") for ln in m.group("body").splitlines()) > 1:
            raise SystemExit(f"{path.name}: one command per marked block ({first!r})")
        out.append(Block(path, m.span("body"), first[2:].strip(), m.group("keep") or ""))
    return out


def trim(lines: list[str], keep: str) -> list[str]:
    """The lines ``keep`` selects, in order, one ``…`` for each stretch left out (module docstring)."""
    if not keep.strip():
        return lines
    n, chosen = len(lines), set()
    for item in (s.strip() for s in keep.split(";") if s.strip()):
        if item.startswith("/"):
            to_end = item.endswith("/:")
            rx = re.compile(item[1:-2] if to_end else item[1:-1])
            hits = [i for i, ln in enumerate(lines) if rx.search(ln)]
            if not hits:
                raise ValueError(f"keep item {item!r} matches no line")
            chosen.update(range(hits[0], n) if to_end else hits)
        else:
            a, _, b = item.partition(":")
            chosen.update(range(n)[slice(int(a) if a else None, int(b) if b else None)])
    out, last = [], -1
    for i in sorted(chosen):
        if i > last + 1:
            out.append("…")
        out.append(lines[i])
        last = i
    if last < n - 1:
        out.append("…")
    return out


def run(command: str, workdir: Path) -> list[str]:
    """stdout and stderr of ``command`` together, as lines, also saved in WORKDIR/outputs/ (NN.txt as printed, NN.json
    as lines, commands.json the index); exits with its message when it fails."""
    t0 = time.monotonic()
    n = 1 + max((int(f.stem) for f in (workdir / "outputs").glob("[0-9][0-9]*.json")), default=-1)
    log = workdir / "outputs" / f"{n:02d}.txt"
    print(f"$ {command}", file=sys.stderr, flush=True)
    p = subprocess.run(["bash", "-c", command], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
    text = p.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
    log.write_text(text)
    print(f"  {time.monotonic() - t0:.0f} s, exit {p.returncode}, full output: {log}", file=sys.stderr, flush=True)
    if p.returncode != 0:
        sys.exit(f"walkthrough: `{command}` failed (exit {p.returncode}); nothing rewritten. Its output:\n"
                 + "\n".join(text.splitlines()[-20:]))
    # a progress bar redraws with carriage returns: keep what the line finally showed
    lines = [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.splitlines()]
    (workdir / "outputs" / f"{n:02d}.json").write_text(json.dumps(lines, ensure_ascii=False))
    index = workdir / "outputs" / "commands.json"
    saved = json.loads(index.read_text()) if index.exists() else {}
    index.write_text(json.dumps({**saved, command: f"{n:02d}.json"}, ensure_ascii=False, indent=1))
    return lines


def machine(total_s: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        versions = f"torch {torch.__version__}, "
    except ImportError:
        versions = ""
    return (f"{os.cpu_count()}-core CPU ({cpu}, {platform.machine()}), no GPU; {versions}Python "
            f"{platform.python_version()}; all commands together took {total_s / 60:.0f} min")


def rewrite(path: Path, outputs: dict[str, list[str]], total_s: float | None) -> None:
    """Paste the outputs into ``path``'s marked blocks, read afresh (the prose may have been edited meanwhile)."""
    text = path.read_text()
    for b in reversed(blocks(path)):
        body = "\n".join([f"$ {b.command}", *trim(outputs[b.command], b.keep)]) + "\n"
        text = text[:b.span[0]] + body + text[b.span[1]:]
    if total_s is not None:
        text = MACHINE.sub(lambda m: m.group(1) + machine(total_s) + m.group(3), text)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder to run in; must not exist yet (default: a new temporary folder)")
    ap.add_argument("--reuse", type=Path, default=None, metavar="WORKDIR",
                    help="take the outputs an earlier call saved in WORKDIR/outputs and run there only the commands "
                         "it lacks (to change a keep= without training again)")
    ap.add_argument("--list", action="store_true", help="print the commands in the order they would run, and stop")
    args = ap.parse_args(argv)

    found = [b for p in (WALKTHROUGH, *ALSO) if p.exists() for b in blocks(p)]
    order = list(dict.fromkeys(b.command for b in found))    # the walkthrough's first, then the others' new ones
    if args.list:
        print("\n".join(order))
        return 0

    outputs: dict[str, list[str]] = {}
    if args.reuse is not None:
        workdir = args.reuse.resolve()
        saved = json.loads((workdir / "outputs" / "commands.json").read_text())
        outputs = {c: json.loads((workdir / "outputs" / f).read_text()) for c, f in saved.items()}
    elif args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="avglr-walkthrough-"))
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True)                   # a fresh folder: refuse one that exists
    if args.reuse is None:
        (workdir / ".venv").symlink_to(ROOT / ".venv")
        (workdir / "outputs").mkdir()
    print(f"walkthrough: {sum(c not in outputs for c in order)} commands to run in {workdir}", file=sys.stderr,
          flush=True)

    t0 = time.monotonic()
    for command in order:
        if command not in outputs:
            outputs[command] = run(command, workdir)
    total = time.monotonic() - t0 if args.reuse is None else None

    # the files again, as they are now: a command added to a marked block meanwhile runs here
    found = [b for p in (WALKTHROUGH, *ALSO) if p.exists() for b in blocks(p)]
    for b in found:
        if b.command not in outputs:
            outputs[b.command] = run(b.command, workdir)
    for b in found:
        trim(outputs[b.command], b.keep)              # every keep item must match before anything is written
    changed = [p for p in (WALKTHROUGH, *ALSO) if p.exists() and blocks(p)]
    for p in changed:
        rewrite(p, outputs, total if p == WALKTHROUGH else None)
    took = "" if total is None else f" ({total / 60:.1f} min of commands)"
    print(f"walkthrough: rewrote {', '.join(str(p.relative_to(ROOT)) for p in changed)}{took}; runs in {workdir}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
