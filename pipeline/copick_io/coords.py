"""(z, y, x) voxels inside the pipeline <-> (x, y, z) Angstrom in copick: the one place this conversion lives
(voxel centres on integer indices)."""

from __future__ import annotations

import numpy as np


def zyx_vox_to_xyz_ang(centers_zyx_vox: np.ndarray, voxel_size: float) -> np.ndarray:
    centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
    return centers[:, ::-1] * float(voxel_size)


def xyz_ang_to_zyx_vox(picks_xyz_ang: np.ndarray, voxel_size: float) -> np.ndarray:
    picks = np.asarray(picks_xyz_ang, dtype=np.float64).reshape(-1, 3)
    return picks[:, ::-1] / float(voxel_size)

