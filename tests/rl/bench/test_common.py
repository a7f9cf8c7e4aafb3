"""What every benchmark records about the machine (rl/bench/common.py)."""

from rl.bench.common import cpu_description, machine_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: Something Else
"""


def test_cpu_description_names_the_generation_and_the_bf16_hardware():
    assert cpu_description(CPUINFO) == {"cpu_model": "AMD EPYC (family 25, model 17)",
                                        "bf16": ["avx512_bf16"]}
    intel = CPUINFO.replace("avx512_bf16 amx_tile", "amx_bf16 amx_tile avx512_bf16")
    assert cpu_description(intel)["bf16"] == ["amx_bf16", "avx512_bf16"]
    assert cpu_description("model name\t: X\nflags\t: sse2\n") == {"cpu_model": "X",
                                                                   "bf16": []}


def test_machine_info_carries_the_cpu():
    info = machine_info()
    assert info["cpu_model"] and info["cpu_count"] >= 1 and "bf16" in info
