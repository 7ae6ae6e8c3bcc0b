"""pandas tables from capture records (pure: records and tensors in, DataFrames out)."""

from __future__ import annotations

import math

import pandas as pd
import torch

from . import geometry

__all__ = ["decomposed_theta", "theta_table"]


def decomposed_theta(theta: torch.Tensor) -> pd.DataFrame:
    """One row per sample of theta ``(B, 2, 3)``: the six entries and their decomposition
    (rotation in degrees, scale x / y, shear, translation). Singular rows get NaN components."""
    theta = theta.detach().to("cpu", torch.float64).reshape(-1, 2, 3)
    rows = []
    for t in theta:
        row = {f"theta_{r}{c}": float(t[r, c]) for r in range(2) for c in range(3)}
        try:
            parts = geometry.decompose_affine(t.unsqueeze(0))
            row.update(rotation_deg=math.degrees(float(parts.rotation)), scale_x=float(parts.scale_x),
                       scale_y=float(parts.scale_y), shear=float(parts.shear), tx=float(parts.tx), ty=float(parts.ty))
        except ValueError:
            row.update(rotation_deg=math.nan, scale_x=math.nan, scale_y=math.nan, shear=math.nan,
                       tx=float(t[0, 2]), ty=float(t[1, 2]))
        rows.append(row)
    return pd.DataFrame(rows)


def theta_table(records, index: int = 0) -> pd.DataFrame:
    """One row per capture record for sample ``index``: module, family and, for affine-type
    families, the raw and decomposed theta."""
    rows = []
    for r in records:
        row = {"module": r.module, "call": r.call, "family": r.family or "unknown"}
        theta = r.theta
        if theta is not None:
            row.update(decomposed_theta(theta[index : index + 1]).iloc[0].to_dict())
        elif r.params is not None:
            row["params"] = [round(float(v), 4) for v in r.params[index].flatten()]
        rows.append(row)
    return pd.DataFrame(rows)
