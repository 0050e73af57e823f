"""What an Intel GPU or NPU needs besides OpenVINO, found on this box (``appliance doctor``).

OpenVINO lists a GPU or NPU only when the whole stack is there: the kernel driver's device
node (``/dev/dri/renderD*`` from i915 or xe; ``/dev/accel/accel*`` from intel_vpu), the
user-space runtime (the GPU's OpenCL driver ``libigdrcl.so`` from intel-opencl-icd and the
Level Zero loader ``libze_loader.so.1`` from libze1; the NPU's user-mode driver
``libze_intel_vpu.so``, which Debian 12 does not package: Intel's linux-npu-driver releases
carry it), and permission to open the node (the ``render`` group). When OpenVINO does not
list a device, :func:`advice` says which of these is missing, so an operator does not have to
guess. The probe reads files only; :func:`advice` is pure, so both are tested on a fake root.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib", "usr/local/lib")
GPU_OPENCL = "libigdrcl.so"        # intel-opencl-icd
LEVEL_ZERO = "libze_loader.so.1"   # libze1
NPU_DRIVER = "libze_intel_vpu.so"  # Intel's linux-npu-driver (not in Debian 12)
Level = Literal["info", "warning"]
GPU_MODULES = ("i915", "xe")
NPU_MODULES = ("intel_vpu",)


@dataclass(frozen=True)
class AcceleratorProbe:
    render_nodes: list[str] = field(default_factory=list)
    npu_nodes: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    libraries: dict[str, bool] = field(default_factory=dict)
    render_access: bool = False  # may open the render nodes (render group, or root)


def _has_library(root: Path, name: str) -> bool:
    return any(next((root / d).glob(f"{name}*"), None) is not None for d in LIBRARY_DIRS
               if (root / d).is_dir())


def probe(root: Path = Path("/")) -> AcceleratorProbe:
    render = sorted(p.name for p in (root / "dev/dri").glob("renderD*"))
    npu = sorted(p.name for p in (root / "dev/accel").glob("accel*"))
    modules = [m for m in (*GPU_MODULES, *NPU_MODULES) if (root / "sys/module" / m).is_dir()]
    libraries = {name: _has_library(root, name) for name in (GPU_OPENCL, LEVEL_ZERO, NPU_DRIVER)}
    return AcceleratorProbe(render, npu, modules, libraries, _render_access())


def _render_access() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        render = grp.getgrnam("render").gr_gid
    except KeyError:
        return False
    return render in os.getgroups()


def advice(found: AcceleratorProbe, openvino_devices: list[str]) -> list[tuple[Level, str]]:
    """(level, message) for each accelerator OpenVINO does not list, saying what is missing;
    nothing for one it lists."""
    kinds = {d.split(".")[0] for d in openvino_devices}
    said: list[tuple[Level, str]] = []
    if "GPU" not in kinds:
        if not found.render_nodes:
            said.append(("info", "no GPU: no /dev/dri/renderD* node (no Intel GPU, or its "
                                 "kernel driver i915/xe is not loaded)"))
        else:
            missing = [f"{lib} ({pkg})" for lib, pkg in ((GPU_OPENCL, "intel-opencl-icd"),
                                                         (LEVEL_ZERO, "libze1"))
                       if not found.libraries.get(lib)]
            if not found.render_access:
                missing.append("access to /dev/dri/renderD* (add the service user to the "
                               "render group)")
            said.append(("warning", "a GPU render node is present but OpenVINO lists no GPU"
                         + (f"; missing: {', '.join(missing)}" if missing else
                            "; the runtime is installed, so check the driver's messages "
                            "(dmesg) and the OpenVINO GPU plugin")))
    if "NPU" not in kinds:
        if not found.npu_nodes:
            why = ("the intel_vpu module is loaded but made no /dev/accel node"
                   if "intel_vpu" in found.modules else
                   "no /dev/accel/accel* node (no NPU, or a kernel without intel_vpu, 6.3+)")
            said.append(("info", f"no NPU: {why}"))
        else:
            missing = [f"{lib} ({pkg})" for lib, pkg in (
                (NPU_DRIVER, "Intel's linux-npu-driver; Debian 12 does not package it"),
                (LEVEL_ZERO, "libze1")) if not found.libraries.get(lib)]
            said.append(("warning", "an NPU node is present but OpenVINO lists no NPU"
                         + (f"; missing: {', '.join(missing)}" if missing else
                            "; the user-mode driver is installed, so check its version "
                            "against the kernel's intel_vpu")))
    return said
