"""Pin requirements/robot.txt for the robot image (CPython 3.10, linux x86_64) into robot-py310.txt.

    python docker/lock_robot.py            # needs PyPI; takes about a minute

requirements/constraints.txt is resolved on Python 3.11 here and names versions that do not exist
for 3.10 (numpy 2.4, diffusers 0.42, ...). This asks pip to resolve robot.txt for 3.10 with the
3.11 pins as preferences, dropping a preference only when pip proves it impossible, so the robot
runs the same versions as this machine wherever it can. The differences are written into the lock
header, and tests/docker checks that header against both files.

torch is resolved through a metadata-only stand-in carrying the CPU wheel's own dependencies: the
image installs torch from the PyTorch index (CPU or CUDA), never the CUDA build that PyPI serves.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INPUT = REPO / "requirements/robot.txt"
LOCK = REPO / "requirements/robot-py310.txt"
CONSTRAINTS = REPO / "requirements/constraints.txt"
# Ubuntu 22.04 has glibc 2.35: every manylinux tag up to it installs there.
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in (35, 34, 31, 28, 27, 24, 17, 12, 5)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
# torch: installed by the Dockerfile from the PyTorch index. setuptools: torch asks for >=77, but
# colcon on Humble builds ament_python packages with setup.py commands that newer setuptools
# deprecate or drop; the image keeps Ubuntu's python3-setuptools and installs torch --no-deps.
NOT_LOCKED = {"torch", "setuptools"}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def input_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canon(name)] = version.strip()
    return pins


def torch_stub(wheel_dir: Path, version: str) -> None:
    """A wheel holding only torch's metadata, with the dependencies of the installed CPU wheel."""
    requires = md.metadata("torch").get_all("Requires-Dist") or []
    meta = f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\nRequires-Python: >=3.10\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(wheel_dir / f"torch-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", meta)
        wheel = "Wheel-Version: 1.0\nGenerator: lock_robot\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        whl.writestr(f"{info}/WHEEL", wheel)
        whl.writestr(f"{info}/RECORD", "")


def resolve(requirements: Path, prefs: dict[str, str], stub_dir: Path, work: Path) -> dict[str, str]:
    prefs = dict(prefs)
    for _ in range(60):
        pref_file = work / "prefs.txt"
        pref_file.write_text("".join(f"{n}=={v}\n" for n, v in sorted(prefs.items())))
        report = work / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--only-binary=:all:", "--python-version", "3.10", "--implementation", "cp", "--abi", "cp310"]
        cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
        cmd += ["--target", str(work / "t"), "--find-links", str(stub_dir), "--report", str(report)]
        cmd += ["-r", str(requirements), "-c", str(pref_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            items = json.loads(report.read_text())["install"]
            return {canon(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
        # pip names the preference that makes resolution impossible; drop it and retry
        said = proc.stdout + proc.stderr
        blocked = re.findall(r"The user requested \(constraint\) ([A-Za-z0-9_.\-]+)==", said)
        blocked += re.findall(r"(?:requirement|distribution found for) ([A-Za-z0-9_.\-]+)", said)
        blocked = sorted({canon(b) for b in blocked if canon(b) in prefs})
        if not blocked:
            sys.exit(f"pip could not resolve {requirements} for Python 3.10:\n{said[-4000:]}")
        for name in blocked:
            print(f"  {name}=={prefs.pop(name)} has no Python 3.10 solution; letting pip choose", flush=True)
    sys.exit("gave up after 60 rounds of dropping preferences")


def main() -> None:
    text = INPUT.read_text()
    torch_pin = re.search(r"^torch==(\S+)", text, re.M)
    if not torch_pin:
        sys.exit(f"{INPUT} must pin torch (torch==X.Y.Z): the image installs exactly that version")
    prefs = {n: v for n, v in read_pins(CONSTRAINTS).items() if not n.startswith("ros-")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "stub").mkdir()
        # "+cpu" ranks above PyPI's CUDA build of the same version, as the CPU index's wheel does
        torch_stub(work / "stub", torch_pin.group(1) + "+cpu")
        print(f"resolving {INPUT.relative_to(REPO)} for CPython 3.10 (linux x86_64) ...", flush=True)
        pins = resolve(INPUT, prefs, work / "stub", work)
    pins = {n: v for n, v in pins.items() if n not in NOT_LOCKED}
    three11 = read_pins(CONSTRAINTS)
    differs = sorted(n for n in pins if n in three11 and three11[n] != pins[n])
    header = [
        "# Pinned Python dependencies of the robot image: CPython 3.10 (Ubuntu 22.04, ROS 2 Humble), linux x86_64.",
        "# Generated by `python docker/lock_robot.py` from requirements/robot.txt; do not edit by hand.",
        f"# input-sha256: {input_digest(text)}",
        f"# torch=={torch_pin.group(1)} is installed before this file, from the PyTorch index (CPU or CUDA).",
        "# Versions that differ from requirements/constraints.txt (resolved on Python 3.11):",
    ]
    header += [f"#   differs: {n} {pins[n]} (constraints.txt: {three11[n]})" for n in differs] or ["#   (none)"]
    LOCK.write_text("\n".join(header + [f"{n}=={v}" for n, v in sorted(pins.items())]) + "\n")
    print(f"wrote {LOCK.relative_to(REPO)}: {len(pins)} pins, {len(differs)} differ from constraints.txt")


if __name__ == "__main__":
    main()
