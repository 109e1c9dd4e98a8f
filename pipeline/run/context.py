"""What one worker holds for a whole job: its device (resolved once, here), the open project, the objects to
pick and, for the segment stage, the loaded ensemble. Built once per worker process (or Ray actor)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.device import DeviceChoice, make_current, resolve_device

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    cfg: RunConfig
    device: DeviceChoice
    root: object
    objects: list = field(default_factory=list)  # ParticleObjects to pick, label ids as the model/log has them
    ensemble: object | None = None  # pipeline.models.Ensemble when the segment stage runs

    @classmethod
    def open(cls, cfg: RunConfig, device: DeviceChoice | str | None = None, root=None) -> WorkerContext:
        """Resolve the device, open the project, load the models and check their labels against the project."""
        from pipeline import copick_io, overlay_files
        from pipeline.run.select import (
            input_probabilities,
            input_segmentation,
            objects_for_model,
            objects_for_segmentation,
        )

        if not isinstance(device, DeviceChoice):
            device = resolve_device(device or cfg.device)
        make_current(device)
        root = root if root is not None else copick_io.open_project(cfg.copick_config)
        project_objects = copick_io.particle_objects(root)
        ensemble = None
        if cfg.has("segment"):
            from pipeline.heap import retain_freed_memory
            from pipeline.models import check_labels, load_ensemble

            retain_freed_memory()  # windows reuse the freed pages instead of faulting them in again

            ensemble = load_ensemble(cfg.model.configs, cfg.model.weights, device=device.torch_device)
            check_labels(ensemble.labels, project_objects, where=f"model config {cfg.model.configs[0]!r}")
            objects = objects_for_model(cfg, project_objects, ensemble.labels)
        elif input_probabilities(cfg) is not None:
            from pipeline.errors import ConfigError, RunError
            from pipeline.probability_files import check_voxel_size, read_labels, read_voxel_size

            folder = Path(input_probabilities(cfg))
            first = next(iter(sorted(folder.glob("*.h5"))), None)
            if first is None:
                if not folder.is_dir():
                    raise ConfigError(f"{cfg.source}: the probabilities folder '{folder}' does not exist; give the "
                                      "folder that `tomopick segment --save-probabilities` wrote")
                raise ConfigError(f"{cfg.source}: no probability files (*.h5) in '{folder}'")
            objects = objects_for_segmentation(cfg, project_objects, read_labels(first))
            try:  # refused before any run starts: each would fail alike
                check_voxel_size(first, read_voxel_size(first), cfg.voxel_size)
            except RunError as exc:
                raise ConfigError(f"{cfg.source}: {exc}") from None
        elif (seg := input_segmentation(cfg)) is not None:
            log_labels = overlay_files.read_segmentation_labels(root, seg)
            if log_labels is None:
                log.info("no segmentation log for %s; label ids from the copick config", seg.uri())
            objects = objects_for_segmentation(cfg, project_objects, log_labels)
        else:  # no stage (stages: [] with evaluate): the picks there are scored, of the objects asked for
            objects = objects_for_segmentation(cfg, project_objects, None)
        from pipeline.collector import started

        started()  # imports and models are in: later collections skip them (in tomopick's own processes)
        return cls(cfg, device, root, objects, ensemble)
