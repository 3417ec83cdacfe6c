"""The benchmark's summary: one row per (workload, variant) from the timing results, a markdown table, and
the description of the machine the numbers depend on."""
from __future__ import annotations

import os
import platform
import statistics
from typing import Any

import lightning as L
import torch

from repro.bench.timing import SHORT, BenchResult
from repro.record import machine

__all__ = ["summarize", "table", "machine_description"]


def machine_description() -> dict[str, Any]:
    """The run record's machine block (``repro.record.machine``, with the CPU's kernel ISA) plus library versions,
    inter-op threads and load: what the numbers depend on (results before 4 Dec name the ISA ``cpu_capability``)."""
    return {
        **machine(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": os.getloadavg(),
    }


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def summarize(results: list[BenchResult]) -> list[dict[str, Any]]:
    """One row per (workload, variant): fp32 and bf16 ratios, speed-ups, samples/s and peak memory."""
    rows: list[dict[str, Any]] = []
    for key in dict.fromkeys((r.workload, r.variant) for r in results):
        by_prec = {r.precision: r for r in results if (r.workload, r.variant) == key}
        row: dict[str, Any] = {"workload": key[0], "variant": key[1]}
        for prec, r in by_prec.items():
            s = SHORT[prec]
            ref = f"ref-{s}"
            row[f"{s}_ms_repro"] = 1e3 * r.median("repro")
            row[f"{s}_samples_per_s"] = r.samples_per_iteration / r.median("repro")
            row[f"{s}_finite"] = r.finite
            row[f"{s}_peak_mb_repro"] = r.peak_mb.get("repro")
            if ref in r.seconds:
                row[f"{s}_ms_ref"] = 1e3 * r.median(ref)
                row[f"{s}_ratio"] = r.ratio("repro", ref)
                row[f"{s}_peak_mb_ref"] = r.peak_mb.get(ref)
            if r.reference_error:
                row["reference_error"] = r.reference_error
        r32, r16 = by_prec.get("32-true"), by_prec.get("bf16-mixed")
        if r16 is not None and "ref-fp32" in r16.seconds and "ref-bf16" in r16.seconds:
            pooled = [r for r in (r32, r16) if r is not None]
            row["bf16_speedup_ref"] = statistics.median(
                a / b for r in pooled for a, b in zip(r.seconds["ref-fp32"], r.seconds["ref-bf16"])
            )
            if r32 is not None and "ref-fp32" in r32.seconds:
                # repro32/repro16 = (repro32/ref32 in the fp32 run) * (ref32/repro16 in the bf16 run)
                row["bf16_speedup_repro"] = r32.ratio("repro", "ref-fp32") * r16.ratio("ref-fp32", "repro")
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the summary rows."""
    head = (
        "| workload | variant | fp32 ms/it repro | fp32 ms/it ref | repro/ref fp32 | samples/s fp32 | peak MB repro / ref "
        "| bf16 ms/it repro | repro/ref bf16 | bf16 speed-up repro | bf16 speed-up ref | bf16 finite |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['variant']} | {_fmt(r.get('fp32_ms_repro'), '.2f')} | {_fmt(r.get('fp32_ms_ref'), '.2f')} "
            f"| {_fmt(r.get('fp32_ratio'), '.3f')} | {_fmt(r.get('fp32_samples_per_s'), '.0f')} "
            f"| {_fmt(r.get('fp32_peak_mb_repro'), '.1f')} / {_fmt(r.get('fp32_peak_mb_ref'), '.1f')} "
            f"| {_fmt(r.get('bf16_ms_repro'), '.2f')} | {_fmt(r.get('bf16_ratio'), '.3f')} "
            f"| {_fmt(r.get('bf16_speedup_repro'), '.2f')} | {_fmt(r.get('bf16_speedup_ref'), '.2f')} "
            f"| {r.get('bf16_finite', 'n/a')} |"
        )
    return "\n".join(lines)
