"""What doctor says is missing for a GPU or an NPU, from a probe of a fake root."""

from __future__ import annotations

from pathlib import Path

from appliance.system.accelerators import (
    GPU_OPENCL,
    LEVEL_ZERO,
    NPU_DRIVER,
    AcceleratorProbe,
    advice,
    probe,
)


def touch(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def messages(said: list[tuple[str, str]]) -> str:
    return " | ".join(f"{level}: {text}" for level, text in said)


def test_the_probe_finds_nodes_modules_and_libraries_under_a_root(tmp_path: Path) -> None:
    touch(tmp_path, "dev/dri/renderD128")
    touch(tmp_path, "dev/accel/accel0")
    (tmp_path / "sys/module/intel_vpu").mkdir(parents=True)
    touch(tmp_path, f"usr/lib/x86_64-linux-gnu/{LEVEL_ZERO}")
    found = probe(tmp_path)
    assert (found.render_nodes, found.npu_nodes, found.modules) == \
        (["renderD128"], ["accel0"], ["intel_vpu"])
    assert found.libraries == {GPU_OPENCL: False, LEVEL_ZERO: True, NPU_DRIVER: False}


def test_a_box_without_accelerators_is_told_so_as_information() -> None:
    said = advice(AcceleratorProbe(), ["CPU"])
    assert [level for level, _ in said] == ["info", "info"]
    assert "no GPU" in messages(said) and "no NPU" in messages(said)


def test_a_gpu_node_without_the_opencl_runtime_names_the_package() -> None:
    found = AcceleratorProbe(render_nodes=["renderD128"], libraries={LEVEL_ZERO: True},
                             render_access=True)
    gpu = advice(found, ["CPU"])[0]
    assert gpu[0] == "warning" and "intel-opencl-icd" in gpu[1] and "libze1" not in gpu[1]


def test_a_gpu_the_service_user_may_not_open_says_to_join_render() -> None:
    found = AcceleratorProbe(render_nodes=["renderD128"],
                             libraries={GPU_OPENCL: True, LEVEL_ZERO: True})
    assert "render group" in advice(found, ["CPU"])[0][1]


def test_an_npu_node_without_the_user_mode_driver_says_debian_lacks_it() -> None:
    found = AcceleratorProbe(npu_nodes=["accel0"], modules=["intel_vpu"],
                             libraries={LEVEL_ZERO: True})
    npu = advice(found, ["CPU", "GPU"])
    assert npu == [("warning", npu[0][1])] and "linux-npu-driver" in npu[0][1]
    assert "Debian 12 does not package it" in npu[0][1]


def test_devices_openvino_lists_need_no_advice() -> None:
    found = AcceleratorProbe(render_nodes=["renderD128"], npu_nodes=["accel0"])
    assert advice(found, ["CPU", "GPU.0", "NPU"]) == []
