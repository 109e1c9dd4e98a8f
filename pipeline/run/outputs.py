"""A run's outputs: written by the loop's writer, removed again for a run that failed, so nothing half-written
ever looks complete. The done marker goes last; a kill before it makes the run redo itself next time.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.config import RunConfig
from pipeline.run.select import done_marker_info, marker_key, written_segmentation

log = logging.getLogger(__name__)


class RunOutputs:
    def __init__(self, root, cfg: RunConfig, objects):
        self.root, self.cfg, self.objects = root, cfg, objects
        self.seg = written_segmentation(cfg)
        self.key = marker_key(cfg)
        self.picks = cfg.has("localize")

    @property
    def wants_label_map(self) -> bool:
        return self.seg is not None

    def write(self, run_id: str, picks: dict | None, label_map_host: np.ndarray | None) -> None:
        from pipeline import copick_io, overlay_files

        loc = self.cfg.localize
        # a failure here reaches the loop's fail(), which removes whatever of this run was written
        overlay_files.clear_run_done(self.root, run_id, self.key)
        if self.seg is not None and label_map_host is not None:
            copick_io.write_segmentation(self.root, run_id, label_map_host, self.cfg.voxel_size, self.seg)
        counts = {}
        if self.picks:
            for obj in self.objects:
                p = picks[obj.name]
                copick_io.write_picks(self.root, run_id, obj.name, p.centers_zyx_vox, self.cfg.voxel_size,
                                      loc.pick_user_id, loc.pick_session_id, scores=p.scores)
                counts[obj.name] = len(p)
        overlay_files.mark_run_done(self.root, run_id, self.key, done_marker_info(run_id, counts, self.seg))

    def remove(self, run_id: str) -> None:
        """Undo a run's outputs so a failed run never looks complete."""
        from pipeline import copick_io, overlay_files

        loc = self.cfg.localize
        try:
            overlay_files.clear_run_done(self.root, run_id, self.key)
            if self.seg is not None:
                copick_io.remove_segmentation(self.root, run_id, self.cfg.voxel_size, self.seg)
            if self.picks:
                for obj in self.objects:
                    copick_io.remove_picks(self.root, run_id, obj.name, loc.pick_user_id, loc.pick_session_id)
        except Exception as exc:
            log.error("run %s: could not remove partial output: %s", run_id, exc)
