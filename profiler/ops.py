"""Per-operator breakdown of a LUT's entries (``hwnas lut show --by op``), from its ``NAME.ops.csv`` sidecar."""

from __future__ import annotations

from typing import Any

__all__ = ["ops_breakdown"]


def ops_breakdown(lut: Any) -> dict[str, Any]:
    """``{"lut", "rows"}``: per (key, resolution, operator type) the node count, the summed time (ms), its
    share of the entry's operator time and the execution providers; ``note`` instead of rows when the LUT
    has no per-operator data."""
    ops = lut.ops()
    result: dict[str, Any] = {"lut": lut.source, "rows": []}
    if ops is None or ops.empty:
        result["note"] = "no per-operator data"
        return result
    grouped = ops.groupby(["key", "resolution", "op_type"], sort=False).agg(nodes=("node", "count"), ms=("ms", "sum"))
    grouped = grouped.reset_index()
    totals = grouped.groupby(["key", "resolution"])["ms"].transform("sum")
    grouped["share"] = grouped["ms"] / totals.where(totals > 0)
    providers = ops.groupby(["key", "resolution", "op_type"], sort=False)["provider"].agg(
        lambda s: ",".join(sorted({str(p) for p in s if isinstance(p, str)}))
    )
    rows = []
    for rec in grouped.itertuples(index=False):
        rows.append(
            {
                "key": rec.key,
                "resolution": int(rec.resolution),
                "op_type": rec.op_type,
                "nodes": int(rec.nodes),
                "ms": float(rec.ms),
                "share": None if rec.share != rec.share else float(rec.share),
                "provider": providers.get((rec.key, rec.resolution, rec.op_type), ""),
            }
        )
    result["rows"] = rows
    return result
