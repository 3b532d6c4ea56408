"""The CPU record of config.json, and ferkeras' oneDNN switch (issue 26): TensorFlow's own default
leaves oneDNN off on AVX2-only CPUs, where its Eigen kernels train 2.7x slower."""

import json
import os
import platform
import subprocess
import sys

import pytest

from ferkeras.cpu import ISA_FLAGS, cpu_flags, cpu_model

# Where the CPU has one of these, TensorFlow runs oneDNN by itself (DefaultOneDnnPolicy).
ONEDNN_BY_DEFAULT = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"}

RECORD = "import json, ferkeras.cpu as c; print(json.dumps(c.cpu_record()))"


def record_in_fresh_process(**environment: str) -> dict:
    """cpu_record() as a new Python process sees it, TensorFlow's switch set (or not) as given."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | environment
    result = subprocess.run([sys.executable, "-c", RECORD], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN switch is tested on x86 CPUs (AVX2, AVX-512, AMX)")
def test_ferkeras_turns_onednn_on_and_a_users_setting_wins():
    # On every CPU, AVX2-only ones included, where TensorFlow itself would leave it off.
    assert record_in_fresh_process()["onednn"] is True
    assert record_in_fresh_process(TF_ENABLE_ONEDNN_OPTS="0")["onednn"] is False


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN switch is tested on x86 CPUs (AVX2, AVX-512, AMX)")
def test_a_tensorflow_loaded_before_ferkeras_is_named_where_it_costs_speed():
    hint = "import json, keras, ferkeras.cpu as c; print(json.dumps(c.onednn_hint()))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}

    def hint_in_fresh_process(**environment: str) -> str | None:
        result = subprocess.run([sys.executable, "-c", hint], env=env | environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    if ONEDNN_BY_DEFAULT & set(cpu_flags()):  # TensorFlow chose oneDNN by itself: nothing to say
        assert hint_in_fresh_process() is None
    else:  # an AVX2 CPU: keras, imported first, left TensorFlow on Eigen
        assert "imported before ferkeras" in hint_in_fresh_process()
    assert hint_in_fresh_process(TF_ENABLE_ONEDNN_OPTS="0") is None  # the user's own choice


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo (Linux)")
def test_cpu_record_names_the_model_and_its_instruction_sets():
    cpuinfo = open("/proc/cpuinfo").read()
    assert cpu_model() and cpu_model() in cpuinfo
    flags = set(cpuinfo.split("flags", 1)[1].split("\n", 1)[0].split())
    assert cpu_flags() == [f for f in ISA_FLAGS if f in flags]
