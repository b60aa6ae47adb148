"""What machine a benchmark ran on: CPU, board, GPUs, load, emulation (device side).

Only the standard library and psutil; Python 3.10 syntax.
"""
from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path

EMULATION_ENV = "EDGEMPIR_EMULATED"
BUSY_LOAD_PER_CORE = 0.5          # 1-minute load per usable core above which timings suffer

_ARM_PARTS = {  # /proc/cpuinfo "CPU part" of ARM Ltd. cores (implementer 0x41)
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpuinfo_fields(text: str | None) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip().lower(), v.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's name. On ARM boards /proc/cpuinfo's "Model" and "Hardware" lines name the
    board or SoC (a Raspberry Pi 5 says "Raspberry Pi 5 Model B"), so the core comes from
    the implementer and part numbers; the board is reported separately (``board``)."""
    fields = _cpuinfo_fields(cpuinfo if cpuinfo is not None else read_text("/proc/cpuinfo"))
    for key in ("model name", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("cpu part")
    if part:
        name = _ARM_PARTS.get(part.lower()) if fields.get("cpu implementer") == "0x41" else None
        return name or f"ARM implementer {fields.get('cpu implementer')} part {part}"
    return platform.processor() or None


def board_name(cpuinfo: str | None = None) -> str | None:
    """The board (device tree model, else cpuinfo's Model/Hardware line), or None."""
    model = read_text("/proc/device-tree/model")
    if model:
        return model.strip("\x00").strip() or None
    fields = _cpuinfo_fields(cpuinfo)
    model = fields.get("model", "")
    # x86 cpuinfo has a numeric "model" (the CPU model number), which names no board
    if model and not model.isdigit():
        return model
    return fields.get("hardware") or None


def detect_emulation(machine: str | None = None, cpuinfo: str | None = None,
                     env: dict | None = None, binfmt_dir: str = "/proc/sys/fs/binfmt_misc"
                     ) -> dict:
    """Is this process running under an instruction-set emulator (e.g. qemu-user)?

    Evidence, strongest first: the ``EDGEMPIR_EMULATED`` variable the emulation runner sets;
    a /proc/cpuinfo describing another architecture than the interpreter's (qemu-user shows
    the host's cpuinfo for aarch64 guests); a registered, enabled qemu binfmt handler for
    this very architecture (a native machine has no reason to emulate itself).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    text = cpuinfo if cpuinfo is not None else read_text("/proc/cpuinfo")
    fields = _cpuinfo_fields(text)
    evidence = []
    emulator = environ.get(EMULATION_ENV) or None
    if emulator:
        evidence.append(f"{EMULATION_ENV}={emulator}")
    is_arm = machine.startswith(("aarch64", "arm"))
    is_x86 = machine in ("x86_64", "amd64", "i386", "i686")
    if is_arm and ("vendor_id" in fields or "sse2" in fields.get("flags", "").split()):
        evidence.append(f"/proc/cpuinfo describes an x86 CPU ({fields.get('model name')}) but "
                        f"the interpreter is {machine}")
    if is_x86 and "cpu implementer" in fields:
        evidence.append(f"/proc/cpuinfo describes an ARM CPU but the interpreter is {machine}")
    qemu_name = {"aarch64": "qemu-aarch64", "arm64": "qemu-aarch64"}.get(machine,
                                                                         f"qemu-{machine}")
    binfmt = read_text(os.path.join(binfmt_dir, qemu_name))
    if binfmt and binfmt.splitlines()[0].strip() == "enabled":
        evidence.append(f"{binfmt_dir}/{qemu_name} is registered and enabled")
    return {"emulated": bool(evidence), "emulator": emulator, "evidence": evidence}


def gpu_names() -> list[str]:
    names = []
    base = Path("/proc/driver/nvidia/gpus")
    with contextlib.suppress(OSError):
        for d in sorted(base.iterdir()):
            info = _cpuinfo_fields(read_text(str(d / "information")))
            if info.get("model"):
                names.append(info["model"])
    model = read_text("/proc/device-tree/model")
    if not names and model and "jetson" in model.lower():
        names.append(model)
    return names


def machine_info() -> dict:
    import psutil

    cpuinfo = read_text("/proc/cpuinfo")
    flags = _cpuinfo_fields(cpuinfo).get("flags", "").split()
    affinity = None
    with contextlib.suppress(AttributeError, OSError):
        affinity = len(os.sched_getaffinity(0))
    load = None
    with contextlib.suppress(AttributeError, OSError):
        load = [round(v, 2) for v in os.getloadavg()]
    return {
        "arch": platform.machine(),
        "cpu_model": cpu_model(cpuinfo),
        "board": board_name(cpuinfo),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": affinity,
        "memory_total_bytes": int(psutil.virtual_memory().total),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "virtualized": "hypervisor" in flags,
        "load_average": load,
        "emulation": detect_emulation(cpuinfo=cpuinfo),
    }


def busy(machine: dict) -> bool:
    """Other processes were competing for the CPU when bench started (1-minute load)."""
    load, cores = machine.get("load_average"), machine.get("cores_usable") or \
        machine.get("cores_logical") or 1
    return bool(load and load[0] > BUSY_LOAD_PER_CORE * cores)
