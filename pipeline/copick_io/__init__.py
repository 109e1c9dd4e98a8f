"""All copick I/O of the pipeline: the only package that imports copick.

Inside the pipeline everything is (z, y, x) voxels; copick stores picks as (x, y, z) Angstrom. The conversion
lives here and nowhere else: ``xyz_ang = zyx_vox[:, ::-1] * voxel_size`` (voxel centres on integer indices).

Writes are safe: a segmentation or pick set is computed completely before it is written, and an exception (or
Ctrl-C) in the middle of a write removes what was started, so nothing half-written ever looks complete.

Callers use the package's names (``copick_io.write_picks``), so a test can replace one of them here. Parts:
``project`` (open a project, filesystem or CZII data portal; objects, runs, inventories), ``volumes``
(tomograms and segmentations), ``picks``, ``transfer`` (new projects, runs and tomograms; picks in Angstrom, for
import and export), ``coords`` (the one voxel <-> Angstrom conversion).
"""

from pipeline.copick_io._base import copick
from pipeline.copick_io.coords import xyz_ang_to_zyx_vox, zyx_vox_to_xyz_ang
from pipeline.copick_io.picks import (
    pick_sets,
    picks_exist,
    read_pick_scores,
    read_picks,
    read_raw_picks,
    read_scored_picks,
    remove_picks,
    runs_with_pick_set,
    write_picks,
    write_raw_picks,
)
from pipeline.copick_io.project import (
    PORTAL,
    check_portal_config,
    open_project,
    overlay_root,
    particle_objects,
    runs_with_tomogram,
    runs_with_voxel_spacing,
    segmentation_inventory,
    tomogram_inventory,
)
from pipeline.copick_io.transfer import (
    has_tomogram,
    new_project_config,
    pickable_object_dicts,
    read_picks_ang,
    run_aliases,
    run_names,
    tomogram_geometry,
    write_picks_ang,
    write_tomogram,
)
from pipeline.copick_io.volumes import (
    read_array,
    read_segmentation,
    read_tomogram,
    remove_segmentation,
    runs_with_segmentation,
    segmentation_exists,
    tomogram_shape,
    write_segmentation,
)

__all__ = [
    "copick", "xyz_ang_to_zyx_vox", "zyx_vox_to_xyz_ang",
    "open_project", "overlay_root", "particle_objects", "runs_with_tomogram", "runs_with_voxel_spacing",
    "segmentation_inventory",
    "tomogram_inventory",
    "read_array", "read_segmentation", "read_tomogram", "remove_segmentation", "runs_with_segmentation",
    "segmentation_exists", "tomogram_shape", "write_segmentation",
    "pick_sets", "picks_exist", "read_pick_scores", "read_picks", "read_raw_picks", "read_scored_picks",
    "remove_picks", "runs_with_pick_set", "write_picks",
    "write_raw_picks",
    "PORTAL", "check_portal_config", "has_tomogram", "new_project_config", "pickable_object_dicts", "read_picks_ang",
    "run_aliases", "run_names", "tomogram_geometry", "write_picks_ang", "write_tomogram",
]
