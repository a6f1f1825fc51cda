"""The machine record: the CPU model and vector extensions come from /proc/cpuinfo as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge import machine


def test_vector_extensions_are_the_cpus_own_flags_in_a_fixed_order() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next(set(line.split(":", 1)[1].split()) for line in cpuinfo.read_text().splitlines()
                 if line.startswith("flags"))
    have = machine.vector_extensions()
    assert have == [f for f in machine.VECTOR_FLAGS if f in flags]
    assert machine.machine_info()["cpu"] in cpuinfo.read_text()


def test_a_machine_without_cpuinfo_reports_no_cpu_and_no_extensions(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(self: Path, *args: object, **kwargs: object) -> str:
        raise OSError("no such file")

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert machine.vector_extensions() == []
    info = machine.machine_info()
    assert "cpu" not in info and info["cores"].isdigit()
