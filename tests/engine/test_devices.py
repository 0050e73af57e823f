"""The device decision, over fake device lists (no OpenVINO involved)."""

from __future__ import annotations

import pytest

from appliance.devices import ModelTraits, normalise_device_setting, plan_devices

GGUF_Q4_1 = ModelTraits("gguf", "int4-asym", 8192)
IR_ASYM = ModelTraits("openvino-ir", "int4-asym", 8192)
IR_SYM = ModelTraits("openvino-ir", "int4-sym", 8192)


def test_auto_on_a_cpu_only_box_chooses_cpu_and_says_why() -> None:
    plan = plan_devices(["CPU"], "auto", IR_ASYM)
    assert plan.chosen.device == "CPU"
    assert plan.chosen.pipeline == "continuous_batching"
    assert "NPU: not present" in plan.chosen.reason and "GPU: not present" in plan.chosen.reason


def test_auto_prefers_gpu_over_cpu() -> None:
    plan = plan_devices(["CPU", "GPU.0", "GPU.1"], "auto", IR_ASYM)
    assert [c.device for c in plan.candidates] == ["GPU", "CPU"]


def test_auto_prefers_npu_for_an_int4_symmetric_ir() -> None:
    plan = plan_devices(["CPU", "GPU", "NPU"], "auto", IR_SYM, npu_max_prompt_len=1024)
    assert plan.chosen.device == "NPU"
    assert plan.chosen.pipeline == "stateful"
    assert plan.chosen.max_prompt_tokens == 1024
    assert [c.device for c in plan.candidates] == ["NPU", "GPU", "CPU"]


def test_npu_refuses_gguf_and_falls_back_with_a_reason() -> None:
    plan = plan_devices(["CPU", "NPU"], "auto", GGUF_Q4_1)
    assert plan.chosen.device == "CPU"
    assert ("NPU", "the NPU needs an OpenVINO IR model; GGUF is read by CPU and GPU only") in (
        plan.rejected
    )


def test_npu_refuses_asymmetric_int4_weights() -> None:
    plan = plan_devices(["CPU", "GPU", "NPU"], "NPU", IR_ASYM)
    assert plan.chosen.device == "GPU"
    assert any(d == "NPU" and "int4-symmetric" in why for d, why in plan.rejected)


def test_npu_prompt_limit_leaves_room_for_the_answer_in_a_short_context() -> None:
    short = ModelTraits("openvino-ir", "int4-sym", 1024)
    plan = plan_devices(["NPU"], "NPU", short, npu_max_prompt_len=4096, npu_min_response_len=128)
    assert plan.chosen.max_prompt_tokens == 1024 - 128


def test_a_named_device_that_is_absent_falls_back_to_cpu() -> None:
    plan = plan_devices(["CPU"], "GPU", IR_ASYM)
    assert plan.chosen.device == "CPU"
    assert ("GPU", "not present on this box") in plan.rejected


def test_a_named_gpu_index_is_kept() -> None:
    plan = plan_devices(["CPU", "GPU.0", "GPU.1"], "GPU.1", IR_ASYM)
    assert plan.chosen.device == "GPU.1"
    assert "engine.device=GPU.1" in plan.chosen.reason


def test_cpu_is_always_a_candidate_even_if_discovery_found_nothing() -> None:
    plan = plan_devices([], "auto", IR_ASYM)
    assert plan.chosen.device == "CPU"


def test_cpu_prompt_limit_is_the_context_minus_one_token() -> None:
    assert plan_devices(["CPU"], "CPU", GGUF_Q4_1).chosen.max_prompt_tokens == 8191


@pytest.mark.parametrize(("text", "expected"), [
    ("auto", "auto"), ("AUTO", "auto"), ("cpu", "CPU"), ("gpu.1", "GPU.1"), (" npu ", "NPU"),
])
def test_device_settings_are_normalised(text: str, expected: str) -> None:
    assert normalise_device_setting(text) == expected


@pytest.mark.parametrize("text", ["TPU", "NPU.1", "GPU.x", "", "CPU.0"])
def test_unknown_device_settings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unknown device"):
        normalise_device_setting(text)
