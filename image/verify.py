"""``make image-verify``: build twice from the same inputs and compare the outputs.

The second build goes to ``<out>-again``. Equal manifests mean bit-identical outputs; on a
difference this names the outputs that differ and the files inside the root trees that differ
(by content, mode, owner or link target), and runs diffoscope on them when it is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from rich.console import Console

from image.build import build
from image.spec import BuildInputs

console = Console(stderr=True, soft_wrap=True)


def describe(path: Path) -> str:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        body = "-> " + os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        body = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        body = ""
    return f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {int(st.st_mtime)} {body}"


def tree_index(root: Path) -> dict[str, str]:
    index = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            index[str(path.relative_to(root))] = describe(path)
    return index


def differing_files(first: Path, second: Path) -> list[str]:
    a, b = tree_index(first), tree_index(second)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def verify(out: Path | None = None) -> int:
    first_inputs = BuildInputs.from_env(out)
    second_inputs = BuildInputs.from_env(first_inputs.out_dir.with_name(
        first_inputs.out_dir.name + "-again"))
    shutil.rmtree(second_inputs.out_dir, ignore_errors=True)
    console.rule("first build")
    first = build(first_inputs)
    console.rule("second build")
    second = build(second_inputs)
    a, b = first["files"], second["files"]
    assert isinstance(a, dict) and isinstance(b, dict)
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    report = {"identical": not differ, "differ": differ, "files": a}
    (first_inputs.out_dir / "verify.json").write_text(json.dumps(report, indent=2) + "\n")
    if not differ:
        console.print(f"[green]reproducible[/green]: {len(a)} outputs bit-identical")
        for name, entry in sorted(a.items()):
            console.print(f"  {entry['sha256']}  {name}")
        return 0
    console.print(f"[red]not reproducible[/red]: {', '.join(differ)} differ")
    for tree in ("root", "esp", "data"):
        files = differing_files(first_inputs.out_dir / "work" / tree,
                                second_inputs.out_dir / "work" / tree)
        for name in files[:50]:
            console.print(f"  {tree}/{name}")
        if files and shutil.which("diffoscope"):
            for name in files[:5]:
                left = first_inputs.out_dir / "work" / tree / name
                right = second_inputs.out_dir / "work" / tree / name
                if left.is_file() and right.is_file():
                    subprocess.run(["diffoscope", "--max-report-size", "20000",
                                    str(left), str(right)], check=False)
    return 1
