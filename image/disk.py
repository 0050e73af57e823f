"""The raw disk: a GPT with the boot partition, root slots A and B, and the data partition.

sfdisk writes the table from a script with fixed disk and partition UUIDs; the partition
images are then copied in at their offsets (sparse, so zeros take no space).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from image.spec import ImageSpec

MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@dataclass(frozen=True)
class Partition:
    name: str
    type: str
    uuid: str
    start_mib: int
    size_mib: int


def partitions(spec: ImageSpec) -> list[Partition]:
    d, ids = spec.disk, spec.ids
    rows = [("esp", ESP_TYPE, ids.esp_part, d.esp_mib),
            ("root-a", ROOT_X86_64_TYPE, ids.root_a_part, d.slot_mib),
            ("root-b", ROOT_X86_64_TYPE, ids.root_b_part, d.slot_mib),
            ("data", LINUX_DATA_TYPE, ids.data_part, d.data_mib)]
    out, start = [], 1
    for name, kind, uuid, size in rows:
        out.append(Partition(name, kind, uuid, start, size))
        start += size
    return out


def sfdisk_script(spec: ImageSpec) -> str:
    lines = ["label: gpt", f"label-id: {spec.ids.disk}", "unit: sectors", "first-lba: 2048", ""]
    for p in partitions(spec):
        lines.append(f"start={p.start_mib * 2048}, size={p.size_mib * 2048}, type={p.type}, "
                     f"uuid={p.uuid}, name=\"{p.name}\"")
    return "\n".join(lines) + "\n"


def assemble(spec: ImageSpec, out: Path, images: dict[str, Path]) -> Path:
    """images: partition name -> filesystem image to copy in (a missing one stays empty)."""
    parts = partitions(spec)
    total_mib = parts[-1].start_mib + parts[-1].size_mib + 1  # + the backup GPT
    out.unlink(missing_ok=True)
    with out.open("wb") as fh:
        fh.truncate(total_mib * MIB)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(out)],
                   input=sfdisk_script(spec), text=True, check=True, capture_output=True)
    for p in parts:
        if p.name in images:
            subprocess.run(["dd", f"if={images[p.name]}", f"of={out}", "bs=1M",
                            f"seek={p.start_mib}", "conv=notrunc,sparse", "status=none"],
                           check=True)
    return out
