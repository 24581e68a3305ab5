"""Static views of docker/: parsed Dockerfiles (BuildKit's own parser), .dockerignore matching, pins.

Docker has no engine on the development machine, so what can be known without building is read
from the files themselves; docker/check.sh builds and runs the images where an engine exists.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import dockerfile  # the Go (BuildKit) Dockerfile parser, from PyPI

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGES = {"robot": DOCKER / "robot.Dockerfile", "train": DOCKER / "train.Dockerfile"}


@dataclass
class Copy:
    sources: list[str]
    dest: str  # absolute, WORKDIR applied
    line: int


@dataclass
class Parsed:
    path: Path
    commands: list
    args: dict[str, str]  # ARG defaults
    base: str  # FROM with ARG defaults substituted
    copies: list[Copy]
    runs: list[tuple[str, str]]  # (workdir, shell text)
    entrypoint: list[str]
    cmd: list[str]


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def parse(path: Path) -> Parsed:
    commands = dockerfile.parse_file(str(path))
    args: dict[str, str] = {}
    base = ""
    workdir = "/"
    copies, runs = [], []
    entrypoint: list[str] = []
    cmd: list[str] = []
    for c in commands:
        if c.cmd == "ARG":
            for v in c.value:
                name, _, default = v.partition("=")
                args[name] = default
        elif c.cmd == "FROM":
            base = substitute(c.value[0], args)
        elif c.cmd == "WORKDIR":
            workdir = str(Path(workdir) / substitute(c.value[0], args))
        elif c.cmd in ("COPY", "ADD"):
            if any(f.startswith("--from") for f in c.flags):
                continue  # from another stage or image, not the build context
            *srcs, dest = c.value
            dest_abs = dest if dest.startswith("/") else str(Path(workdir) / dest) + ("/" if dest.endswith("/") else "")
            copies.append(Copy(list(srcs), dest_abs, c.start_line))
        elif c.cmd == "RUN":
            runs.append((workdir, c.value[0] if not c.json else shlex.join(c.value)))
        elif c.cmd == "ENTRYPOINT":
            entrypoint = list(c.value) if c.json else shlex.split(c.value[0])
        elif c.cmd == "CMD":
            cmd = list(c.value) if c.json else shlex.split(c.value[0])
    return Parsed(path, commands, args, base, copies, runs, entrypoint, cmd)


def copied_files(parsed: Parsed) -> dict[str, str]:
    """Absolute path in the image -> repo-relative source, for every COPY of a file or directory."""
    out = {}
    for cp in parsed.copies:
        into_dir = cp.dest.endswith("/") or len(cp.sources) > 1
        for src in cp.sources:
            target = str(Path(cp.dest) / Path(src).name) if into_dir else cp.dest.rstrip("/")
            out[target] = src
    return out


# ---------------------------------------------------------------------------------- .dockerignore
def ignore_patterns(dockerfile_path: Path) -> list[tuple[bool, str]]:
    """(is_exception, pattern) of <Dockerfile>.dockerignore, the file BuildKit prefers for -f builds."""
    path = dockerfile_path.with_name(dockerfile_path.name + ".dockerignore")
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exc = line.startswith("!")
        pat = line[1:].strip() if exc else line
        out.append((exc, pat.strip("/")))
    return out


def _glob_regex(pattern: str) -> re.Pattern:
    """Go filepath.Match syntax (`*`, `?`, `[...]` never cross `/`) plus Docker's `**`."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            j = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : j].replace("!", "^", 1) + "]", j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _match(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories."""
    regex = _glob_regex(pattern)
    parts = path.split("/")
    return any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def in_context(patterns: list[tuple[bool, str]], rel_path: str) -> bool:
    """Whether `rel_path` reaches the build context (last matching pattern wins)."""
    included = True
    for exc, pat in patterns:
        if _match(pat, rel_path):
            included = exc
    return included


# ---------------------------------------------------------------------------------- requirements
def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canon(name)] = version.strip()
    return out


def requirement_lines(path: Path) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()]
