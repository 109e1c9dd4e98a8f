"""A run's outputs (its segmentation and pick sets), written only by the loop's writer, through this class.

Nothing good is lost and nothing half-written looks complete:

- Outputs are computed whole before anything is written. A run that fails before writing touches nothing: an
  earlier segmentation or pick set stays as it was.
- While a run writes, a ``writing`` marker exists (``overlay_files.writing_marker``); the done marker goes last.
  What is replaced is first kept in memory; if writing fails, the earlier outputs are put back (byte for byte,
  with the done marker that vouched for them) and new ones that had no earlier version are removed; the error
  names the run and the output whose writing failed. A process killed mid-write leaves the writing marker and no done
  marker: the next job knows those outputs are its own half-written ones and redoes the run.
- Outputs that exist with neither marker were written by someone else; ``foreign`` names them so the job can
  refuse to replace them without ``--overwrite``.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.config import RunConfig
from pipeline.run.select import (
    done_marker_info,
    localize_settings,
    marker_key,
    segment_settings,
    written_segmentation,
)

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

    def _pick_ids(self):
        return self.cfg.localize.pick_user_id, self.cfg.localize.pick_session_id

    def existing(self, run_id: str) -> list[str]:
        """This job's outputs that the run has already (whoever wrote them)."""
        from pipeline import copick_io

        found = []
        if self.seg is not None and copick_io.segmentation_exists(self.root, run_id, self.cfg.voxel_size, self.seg):
            found.append(f"segmentation {self.seg.uri()}")
        if self.picks:
            user, session = self._pick_ids()
            names = [o.name for o in self.objects if copick_io.picks_exist(self.root, run_id, o.name, user, session)]
            if names:
                found.append(f"picks {user}/{session} of {', '.join(names)}")
        return found

    def foreign(self, run_id: str) -> list[str]:
        """Existing outputs of a run that is not done and that no tomopick job was writing or finished: a job
        of another kind (run_all's full job, then `tomopick segment` on the same segmentation) vouches for what
        its done marker names."""
        from pipeline import overlay_files

        if overlay_files.writing_marker(self.root, run_id, self.key).is_file():
            return []
        vouched = self._vouched(run_id)
        return [found for found in self.existing(run_id) if found not in vouched]

    def _vouched(self, run_id: str) -> set[str]:
        """The outputs, spelled as ``existing`` spells them, that any tomopick done marker of the run names."""
        from pipeline import overlay_files

        vouched: set[str] = set()
        for key, info, _ in overlay_files.run_done_markers(self.root, run_id):
            if info.get("segmentation"):
                vouched.add(f"segmentation {info['segmentation']}")
            if self.picks and key == self.key and isinstance(info.get("picks"), dict):
                user, session = self._pick_ids()
                names = [o.name for o in self.objects if o.name in info["picks"]]
                if names:
                    vouched.add(f"picks {user}/{session} of {', '.join(names)}")
        return vouched

    def _backup(self, run_id: str) -> dict:
        """What writing this run replaces, read into memory (nothing when there is nothing to replace)."""
        from pipeline import copick_io

        saved = {}
        if self.seg is not None and copick_io.segmentation_exists(self.root, run_id, self.cfg.voxel_size, self.seg):
            saved["segmentation"] = copick_io.read_segmentation(self.root, run_id, self.cfg.voxel_size, self.seg)
        if self.picks:
            user, session = self._pick_ids()
            for obj in self.objects:
                raw = copick_io.read_raw_picks(self.root, run_id, obj.name, user, session)
                if raw is not None:
                    saved[obj.name] = raw
        return saved

    def write(self, run_id: str, picks: dict | None, label_map_host: np.ndarray | None) -> None:
        from pipeline import copick_io, overlay_files
        from pipeline.errors import RunError, TomopickError

        user, session = self._pick_ids()
        writing = overlay_files.writing_marker(self.root, run_id, self.key)
        saved = self._backup(run_id)
        done = overlay_files.run_done_marker(self.root, run_id, self.key)
        saved_done = done.read_bytes() if done.is_file() else None  # vouches for the earlier outputs, if put back
        overlay_files.mark_writing(writing, run_id)
        counts, step = {}, "the writing marker"
        try:
            overlay_files.clear_run_done(self.root, run_id, self.key)
            if self.seg is not None and label_map_host is not None:
                step = f"segmentation {self.seg.uri()}"
                copick_io.write_segmentation(self.root, run_id, label_map_host, self.cfg.voxel_size, self.seg)
            if self.picks:
                for obj in self.objects:
                    step = f"picks {user}/{session} of {obj.name}"
                    p = picks[obj.name]
                    copick_io.write_picks(self.root, run_id, obj.name, p.centers_zyx_vox, self.cfg.voxel_size,
                                          user, session, scores=p.scores)
                    counts[obj.name] = len(p)
            step = f"the done marker {done}"
            info = done_marker_info(run_id, counts, self.seg, localize_settings(self.cfg), segment_settings(self.cfg))
            overlay_files.mark_run_done(self.root, run_id, self.key, info)
        except BaseException as exc:
            self._restore(run_id, saved, saved_done)
            if isinstance(exc, Exception) and not isinstance(exc, TomopickError):
                raise RunError(f"run '{run_id}': writing {step} failed: {type(exc).__name__}: {exc}") from exc
            raise
        writing.unlink(missing_ok=True)

    def _restore(self, run_id: str, saved: dict, saved_done: bytes | None) -> None:
        """After a failed write: the earlier outputs back (with the done marker that vouched for them), the new
        ones that replaced nothing gone."""
        from pipeline import atomic, copick_io, overlay_files

        user, session = self._pick_ids()
        try:
            overlay_files.clear_run_done(self.root, run_id, self.key)
            if self.seg is not None:
                if "segmentation" in saved:
                    copick_io.write_segmentation(self.root, run_id, saved["segmentation"], self.cfg.voxel_size,
                                                 self.seg)
                else:
                    copick_io.remove_segmentation(self.root, run_id, self.cfg.voxel_size, self.seg)
            if self.picks:
                for obj in self.objects:
                    if obj.name in saved:
                        copick_io.write_raw_picks(self.root, run_id, obj.name, user, session, saved[obj.name])
                    else:
                        copick_io.remove_picks(self.root, run_id, obj.name, user, session)
            if saved_done is not None:
                atomic.write_bytes(overlay_files.run_done_marker(self.root, run_id, self.key), saved_done)
            overlay_files.writing_marker(self.root, run_id, self.key).unlink(missing_ok=True)
            if saved:
                log.warning("run %s: writing failed; its earlier outputs were put back (%s)", run_id,
                            ", ".join(saved))
        except Exception as exc:  # the writing marker stays: the next job redoes this run
            log.error("run %s: could not undo a failed write: %s", run_id, exc)

    def remove_partial(self, run_id: str) -> None:
        """For a worker that died while holding the run: remove what it was writing, if it had started (its
        in-memory copy of the earlier outputs died with it); outputs it never touched stay."""
        from pipeline import copick_io, overlay_files

        if not overlay_files.writing_marker(self.root, run_id, self.key).is_file():
            return
        user, session = self._pick_ids()
        try:
            overlay_files.clear_run_done(self.root, run_id, self.key)
            if self.seg is not None:
                copick_io.remove_segmentation(self.root, run_id, self.cfg.voxel_size, self.seg)
            if self.picks:
                for obj in self.objects:
                    copick_io.remove_picks(self.root, run_id, obj.name, user, session)
            overlay_files.writing_marker(self.root, run_id, self.key).unlink(missing_ok=True)
        except Exception as exc:
            log.error("run %s: could not remove partial output: %s", run_id, exc)
