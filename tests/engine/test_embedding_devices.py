"""Where the embedding model runs, over fake device lists (no OpenVINO involved)."""

from __future__ import annotations

from appliance.devices import plan_embedding_devices


def devices(available: list[str], setting: str) -> list[str]:
    return [c.device for c in plan_embedding_devices(available, setting)]


def test_auto_on_a_cpu_only_box_embeds_on_the_cpu() -> None:
    assert devices(["CPU"], "auto") == ["CPU"]


def test_auto_prefers_the_gpu_and_keeps_the_cpu_as_fallback() -> None:
    assert devices(["CPU", "GPU.0", "GPU.1"], "auto") == ["GPU", "CPU"]


def test_auto_leaves_the_npu_to_the_llm() -> None:
    assert devices(["CPU", "NPU"], "auto") == ["CPU"]


def test_a_named_npu_is_tried_first_with_static_shapes() -> None:
    plan = plan_embedding_devices(["CPU", "NPU"], "npu")
    assert [(c.device, c.static_shapes) for c in plan] == [("NPU", True), ("CPU", False)]
    assert "kb.embedding_device=NPU" in plan[0].reason


def test_a_named_gpu_index_is_kept() -> None:
    assert devices(["CPU", "GPU.0", "GPU.1"], "GPU.1") == ["GPU.1", "CPU"]


def test_a_named_device_that_is_absent_falls_back_to_the_cpu() -> None:
    assert devices(["CPU"], "GPU") == ["CPU"]


def test_the_cpu_is_listed_even_when_probing_found_nothing() -> None:
    assert devices([], "auto") == ["CPU"]
