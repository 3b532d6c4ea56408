"""The CPU a run trains on and the kernels TensorFlow picked for it, for config.json and benchmarks;
the cores a process may use."""

import os
import platform
from pathlib import Path

# The instruction sets that decide TensorFlow's speed here. TensorFlow turns oneDNN on by itself
# only with AVX-512 VNNI or BF16, AVX-VNNI or AMX; ferkeras/__init__.py turns it on everywhere.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's model name, as lscpu gives it."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of ISA_FLAGS the CPU has (empty where the OS does not list them)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (it decides once, when it loads)."""
    from ferkeras.errors import import_tensorflow

    import_tensorflow()
    from tensorflow.python.util import _pywrap_util_port  # the switch's only reader, private

    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_hint() -> str | None:
    """A line for a user whose TensorFlow loaded before ferkeras could turn oneDNN on; else None."""
    # ferkeras/__init__.py asked for oneDNN ("1"), yet TensorFlow, which reads the switch once when
    # it loads, runs Eigen: it was imported first. Only x86 CPUs have oneDNN kernels to miss.
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "1" or "avx2" not in cpu_flags() or onednn_enabled():
        return None
    return ("note: TensorFlow was imported before ferkeras, so it runs its Eigen kernels, not "
            "oneDNN's: training is about half as fast on this CPU; import ferkeras first, or set "
            "TF_ENABLE_ONEDNN_OPTS=1 before Python starts")


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_record() -> dict[str, object]:
    """The CPU and the kernels picked for it, as config.json records them."""
    return {"model": cpu_model(), "flags": cpu_flags(), "onednn": onednn_enabled(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
