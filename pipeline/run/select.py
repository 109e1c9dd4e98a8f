"""Which runs a job takes and what it picks: run selection by the first stage's input, shards, done markers,
the objects to pick. Nothing here computes; everything reads the project through ``pipeline.copick_io``.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.errors import ConfigError, RunError
from pipeline.objects import ParticleObject
from pipeline.selectors import SegSelector, parse_seg_info

log = logging.getLogger(__name__)


def prepare_project(cfg: RunConfig):
    """Open the project, making the synthetic one first when the config asks for it and it is absent."""
    from pipeline import copick_io

    if cfg.synthetic is not None and not Path(cfg.copick_config).is_file():
        from pipeline.synthetic import make_synthetic_project

        s = cfg.synthetic
        log.info("making synthetic project %s (%d runs of %s, seed %d)", s.out, s.runs, tuple(s.shape), s.seed)
        make_synthetic_project(s.out, runs=s.runs, shape=tuple(s.shape), seed=s.seed, snr=s.snr, density=s.density,
                               write_label_map=s.write_label_map)
    return copick_io.open_project(cfg.copick_config)


def written_segmentation(cfg: RunConfig) -> SegSelector | None:
    """The segmentation this job writes (segment stage with ``write_segmentation``), else None."""
    if cfg.has("segment") and cfg.segment.write_segmentation:
        return parse_seg_info(cfg.segment.write_segmentation)
    return None


def input_segmentation(cfg: RunConfig) -> SegSelector | None:
    """The segmentation a localize-only job reads (for a label-map method), else None."""
    if cfg.has("localize") and not cfg.has("segment") and not needs_probabilities(cfg):
        return parse_seg_info(cfg.localize.segmentation)
    return None


def needs_probabilities(cfg: RunConfig) -> bool:
    from pipeline.localize.methods import PROBABILITIES, get_method

    return cfg.has("localize") and get_method(cfg.localize.method).needs == PROBABILITIES


def input_probabilities(cfg: RunConfig) -> str | None:
    """The folder of probability files a localize-only job with a probability method reads, else None."""
    if cfg.has("localize") and not cfg.has("segment") and needs_probabilities(cfg):
        from pipeline.errors import ConfigError

        if not cfg.localize.probabilities:
            raise ConfigError(f"{cfg.source}: method '{cfg.localize.method}' picks from class probabilities; give "
                              "their folder (localize.probabilities / --probabilities DIR, written by `tomopick "
                              "segment --save-probabilities DIR`), or run it with the segment stage")
        return cfg.localize.probabilities
    return None


def select_runs(cfg: RunConfig, root) -> tuple[list[str], dict[str, str], dict | None]:
    """Runs that have the first stage's input (tomogram, or segmentation for a localize-only job), this shard's
    share of them, {run: why skipped} for the others, and (a shard only) what the split was made from (see
    split_basis), which its report records.

    A selection that finds nothing is an error that lists what the project has; runs asked for that are missing
    or lack the input are one warning.
    """
    from pipeline import copick_io

    seg, probabilities = input_segmentation(cfg), input_probabilities(cfg)
    if seg is not None:
        runs, skipped = copick_io.runs_with_segmentation(root, cfg.voxel_size, seg, cfg.run_ids)
        wanted = f"the segmentation {seg.uri()} at {cfg.voxel_size:g} A"
    elif probabilities is not None:
        from pipeline.probability_files import runs_with_probabilities, why_none_found

        names = [r.name for r in root.runs]
        asked = [r for r in names if not cfg.run_ids or r in cfg.run_ids]
        runs, skipped = runs_with_probabilities(probabilities, asked)
        skipped.update({r: "no such run in the project" for r in (cfg.run_ids or []) if r not in names})
        wanted = f"a probability file in {probabilities}"
        if not runs:
            raise RunError(f"{cfg.copick_config}: no run has {wanted}: {why_none_found(probabilities, asked)}")
        # picks are placed at the voxel size: a run without it fails alike, so say it here, once
        placed, _ = copick_io.runs_with_voxel_spacing(root, cfg.voxel_size, runs)
        skipped.update({r: f"no voxel spacing {cfg.voxel_size:g} A" for r in runs if r not in placed})
        if not placed:
            raise RunError(f"{cfg.copick_config}: none of the {len(runs)} run(s) with {wanted} has the voxel size "
                           f"{cfg.voxel_size:g} A; the project's tomograms: "
                           f"{', '.join(copick_io.tomogram_inventory(root)) or 'none'}; check -vs/--voxel-size")
        runs = placed
    else:
        runs, skipped = copick_io.runs_with_tomogram(root, cfg.voxel_size, cfg.tomo_alg, cfg.run_ids)
        wanted = f"tomogram {cfg.tomo_alg}@{cfg.voxel_size:g}"
    if not runs:
        raise RunError(_nothing_selected(cfg, root, seg, wanted, skipped))
    if skipped:
        log.warning("%d run(s) skipped: %s", len(skipped),
                    "; ".join(f"{run_id} ({reason})" for run_id, reason in skipped.items()))
    shard, split = cfg.shard_index(), None
    if shard is not None:
        k, n = shard
        split = {"shard": f"{k}/{n}", **split_basis(runs)}
        if k < len(runs):
            log.info("shard %d/%d: %d of the %d selected run(s)", k, n, len(runs[k::n]), len(runs))
        else:  # not an error: SLURM arrays are often rounded up
            log.info("shard %d/%d: no run; the project has %d selected run(s), so shards %d..%d of %d have none",
                     k, n, len(runs), len(runs), n - 1, n)
        runs = runs[k::n]
    return runs, skipped, split


def split_basis(run_ids: list[str]) -> dict:
    """What a split into shards was made from: the number of runs selected and a digest of their names in
    selection order (shards take runs by position). Shards that record different ones split different run lists
    (the project changed between them, or run_ids were reordered), so their shares may overlap and leave runs
    to no shard."""
    import hashlib

    digest = hashlib.sha256("\n".join(run_ids).encode()).hexdigest()[:16]
    return {"runs_selected": len(run_ids), "run_ids_sha256": digest}


def _nothing_selected(cfg: RunConfig, root, seg, wanted: str, skipped: dict) -> str:
    from pipeline import copick_io

    project = cfg.copick_config
    names = [r.name for r in root.runs]
    if not names:
        return f"{project}: the project has no runs; check copick_config (its static_root / overlay_root)"
    if cfg.run_ids and all(r not in names for r in cfg.run_ids):
        return (f"{project}: none of the runs asked for ({', '.join(cfg.run_ids)}) is in the project; it has "
                f"{len(names)} run(s), e.g. {', '.join(names[:5])}; check run_ids / --run-ids")
    have = copick_io.segmentation_inventory(root) if seg is not None else copick_io.tomogram_inventory(root)
    listing = ", ".join(f"{k} ({v} run{'s' if v > 1 else ''})" for k, v in have.items()) or "none"
    what = "segmentations" if seg is not None else "tomograms"
    fix = ("check --seg-info/--seg-uri and --voxel-size, or run `tomopick segment` first" if seg is not None
           else "check tomo_alg / voxel_size (--tomo-alg / --voxel-size)")
    asked = f" of the {len(cfg.run_ids)} run(s) asked for" if cfg.run_ids else ""
    return f"{project}: no run{asked} has {wanted}; the project's {what}: {listing}; {fix}"


def marker_key(cfg: RunConfig) -> str:
    """Which output a done marker vouches for: the picks (user, session) or, segment-only, the segmentation."""
    if cfg.has("localize"):
        return f"{cfg.localize.pick_user_id}_{cfg.localize.pick_session_id}"
    seg = written_segmentation(cfg)
    return f"segment-{seg.user_id}_{seg.session_id}_{seg.name}" if seg else "segment"


def run_is_done(cfg: RunConfig, root, run_id: str, objects, *, say_why: bool = True) -> bool:
    """A run is done when its marker exists (written last), its outputs are there, and what a localize-only
    job reads was not rewritten since (picks made from a segmentation that was redone are picked again)."""
    from pipeline import copick_io, overlay_files

    marker = overlay_files.run_done_marker(root, run_id, marker_key(cfg))
    if not marker.is_file():
        if not cfg.has("localize") and (by := segmentation_finished_by(cfg, root, run_id)):
            if say_why:
                log.info("run %s: segmentation %s was finished by an earlier tomopick job (%s); skipped",
                         run_id, written_segmentation(cfg).uri(), _describe_key(by))
            return True  # segment-only: the segmentation is what it writes, and it is there, finished
        return False  # never finished (or written before markers existed): redo it
    rewritten = _input_rewritten_since(cfg, root, run_id, marker)
    if rewritten:
        if say_why:  # once per job: the loop asks again when it claims the run
            log.info("run %s: %s was written after its picks; picking it again", run_id, rewritten)
        return False
    loc = cfg.localize
    if cfg.has("localize") and not all(
        copick_io.picks_exist(root, run_id, o.name, loc.pick_user_id, loc.pick_session_id) for o in objects
    ):
        return False
    seg = written_segmentation(cfg)
    return seg is None or copick_io.segmentation_exists(root, run_id, cfg.voxel_size, seg)


def segmentation_finished_by(cfg: RunConfig, root, run_id: str) -> str | None:
    """The done-marker key of another tomopick job that finished the segmentation this job writes, when the
    run has that segmentation and this job's own marker does not name it: replacing it silently would change
    what that job's marker vouches for (and the picks made from it)."""
    from pipeline import copick_io, overlay_files

    seg = written_segmentation(cfg)
    if seg is None:
        return None
    own, others = marker_key(cfg), []
    for key, info, mtime in overlay_files.run_done_markers(root, run_id):
        if info.get("segmentation") == seg.uri():
            if key == own:
                return None
            others.append((mtime, key))
    if others and copick_io.segmentation_exists(root, run_id, cfg.voxel_size, seg):
        return max(others)[1]  # the job that finished it last
    return None


def _describe_key(key: str) -> str:
    """A done-marker key in words: ``segment-octopi_7_predict`` or the picks' ``user_session``."""
    if key.startswith("segment-"):
        return "tomopick segment"
    user, _, session = key.rpartition("_")
    return f"a full job, picks {user}/{session}"


def _input_rewritten_since(cfg: RunConfig, root, run_id: str, marker: Path) -> str | None:
    """What a localize-only job reads that a later job rewrote after ``marker`` (the run's picks) was written:
    a segmentation that another tomopick job's done marker names, or the run's probability file."""
    from pipeline import overlay_files

    made = marker.stat().st_mtime_ns
    seg = input_segmentation(cfg)
    if seg is not None:
        own = marker_key(cfg)
        for key, info, mtime in overlay_files.run_done_markers(root, run_id):
            if key != own and mtime > made and info.get("segmentation") == seg.uri():
                return f"segmentation {seg.uri()}"
    folder = input_probabilities(cfg)
    if folder is not None:
        from pipeline.probability_files import probability_path

        path = Path(probability_path(folder, run_id))
        if path.is_file() and path.stat().st_mtime_ns > made:
            return f"probability file {path}"
    return None


def done_marker_info(run_id: str, picks: dict, seg: SegSelector | None, localize: dict | None = None,
                     segment: dict | None = None) -> dict:
    info = {"run": run_id, "picks": picks, "segmentation": seg.uri() if seg is not None else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if localize is not None:
        info["localize"] = localize
    if segment is not None:
        info["segment"] = segment
    return info


def segment_settings(cfg: RunConfig) -> dict | None:
    """The settings that decide a run's segmentation, as its done marker records them (None when the job does
    not segment): the models (by content) and the settings asked for; window_batch and runtime leave the label
    map as it is, so a change of them is no reason to say anything."""
    if not cfg.has("segment"):
        return None
    seg = cfg.segment
    out = {"models": [[Path(c).name, _file_digest(c)] for c in cfg.model.configs],
           "weights": [[Path(w).name, _file_digest(w)] for w in cfg.model.weights],
           "mode": seg.mode, "ntta": seg.ntta, "precision": seg.precision}
    if seg.mode == "compat":
        out.update(overlap=seg.overlap)
    else:
        out.update(window_scale=seg.window_scale, margin=seg.margin, border_scale=seg.border_scale, blend=seg.blend,
                   sigma_scale=seg.sigma_scale)
    return out


def output_settings(cfg: RunConfig) -> dict:
    """The settings that decide a job's outputs, flat (``segment.ntta``): the project, its tomograms and the
    stages, where the picks go and what a localize-only job reads, and the localize and segment settings as the
    done markers record them. A job's manifest records them; `tomopick report` compares its shards' by them."""
    out = {"copick_config": cfg.copick_config, "voxel_size": cfg.voxel_size, "tomo_alg": cfg.tomo_alg,
           "stages": list(cfg.stages)}
    if cfg.has("localize"):
        out.update({"localize.pick_user_id": cfg.localize.pick_user_id,
                    "localize.pick_session_id": cfg.localize.pick_session_id})
        source = input_segmentation(cfg)
        out["localize.input"] = source.uri() if source is not None else input_probabilities(cfg)
    for part, settings in (("localize", localize_settings(cfg)), ("segment", segment_settings(cfg))):
        out.update({f"{part}.{key}": value for key, value in (settings or {}).items()})
    return out


def _file_digest(path) -> str | None:
    """A short content digest of a model file (read once per file and version: weights are tens of MB)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def localize_settings(cfg: RunConfig) -> dict | None:
    """The settings that decide a run's picks, as its done marker records them (None without picks): a later
    job with other settings can say that the runs it skips were picked otherwise."""
    if not cfg.has("localize"):
        return None
    from pipeline.config_checks import METHOD_SETTINGS

    loc = cfg.localize
    # only what the method reads: a setting it ignores changes no pick, so it is no reason to say anything
    out = {"method": loc.method, "radius_min_scale": loc.radius_min_scale, "label": loc.label}
    for key, methods in METHOD_SETTINGS.items():
        if loc.method in methods:
            value = getattr(loc, key)
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


def recorded_before_overlap_check(settings, prefix: str = ""):
    """Localize settings as a done marker (or, with ``prefix`` "localize.", a shard manifest) recorded them, with
    ``overlap_check: false`` where a peaks record has no such key: it was written before peaks had the check,
    so those runs were picked without it."""
    if (isinstance(settings, dict) and settings.get(f"{prefix}method") == "peaks"
            and f"{prefix}overlap_check" not in settings):
        return {**settings, f"{prefix}overlap_check": False}
    return settings


def picked_otherwise(cfg: RunConfig, root, run_ids: list[str]) -> dict[str, list[str]]:
    """Of runs skipped as done, those whose done marker records other settings than this job's (localize, and
    segment where both segmented): {run: [the settings that differ, e.g. "thresholds", "segment.ntta"]}."""
    from pipeline import overlay_files

    now = {"localize": localize_settings(cfg), "segment": segment_settings(cfg)}
    if now == {"localize": None, "segment": None}:
        return {}
    out = {}
    for run_id in run_ids:
        marker = overlay_files.run_done_marker(root, run_id, marker_key(cfg))
        if not marker.is_file() and not cfg.has("localize") and (by := segmentation_finished_by(cfg, root, run_id)):
            marker = overlay_files.run_done_marker(root, run_id, by)  # segment-only: the job that finished it
        info = overlay_files.read_json(marker)
        differ = []
        for part, prefix in (("localize", ""), ("segment", "segment.")):
            then = info.get(part) if isinstance(info, dict) else None
            if part == "localize":
                then = recorded_before_overlap_check(then)
            if isinstance(then, dict) and isinstance(now[part], dict) and then != now[part]:
                differ += [prefix + k for k in sorted(set(now[part]) | set(then)) if now[part].get(k) != then.get(k)]
        if differ:
            out[run_id] = differ
    return out


def check_per_class_settings(cfg: RunConfig, project_objects: list[ParticleObject]) -> None:
    """Every object named in the per-class peaks settings is a particle object of the project: a misspelled name
    would otherwise leave that class at the default without a word."""
    names = {o.name for o in project_objects}
    for key, flag in (("thresholds", "--threshold"), ("smoothing", "--smoothing"), ("peak_window", "--peak-window")):
        unknown = sorted(k for k in getattr(cfg.localize, key) if k != "default" and k not in names)
        if unknown:
            # a flag only where the command line gave the settings; a run config may have them from its tuned file
            where = f" ({flag})" if cfg.source.startswith("tomopick") else (
                f" (here or in its tuned file {cfg.localize.tuned})" if cfg.localize.tuned else "")
            raise ConfigError(
                f"{cfg.source}: 'localize.{key}'{where} names {', '.join(repr(n) for n in unknown)}, not a particle "
                f"object of {cfg.copick_config}; particle objects: {', '.join(sorted(names)) or 'none'} "
                "(or 'default' for every other)"
            )


def objects_for_model(cfg: RunConfig, project_objects: list[ParticleObject], model_labels: dict[str, int]):
    """The particle objects to pick after segmenting: those the model segments (its label ids win)."""
    check_per_class_settings(cfg, project_objects)
    by_name = {o.name: o for o in project_objects}
    wanted = cfg.localize.pick_objects
    if wanted:
        unknown = [n for n in wanted if n not in by_name or n not in model_labels]
        if unknown:
            raise ConfigError(
                f"{cfg.source}: 'localize.pick_objects' names {unknown}, which are not both particle objects of the "
                f"project ({', '.join(by_name)}) and labels of the model ({', '.join(model_labels)})"
            )
    names = wanted or [n for n in by_name if n in model_labels]
    return [replace(by_name[n], label=int(model_labels[n])) for n in names]


def objects_for_segmentation(cfg: RunConfig, project_objects: list[ParticleObject], log_labels: dict | None):
    """The particle objects to pick from a stored segmentation, with label ids from its log when it has one.

    Without ``localize.pick_objects``: the log's objects that are particles of the project or, without a log,
    every particle object.
    """
    check_per_class_settings(cfg, project_objects)
    by_name = {o.name: o for o in project_objects}
    wanted = cfg.localize.pick_objects
    if wanted is None:
        if log_labels is None or cfg.localize.label is not None:
            wanted = list(by_name)
        else:
            wanted = [name for name in log_labels if name in by_name]
            ignored = [name for name in log_labels if name not in by_name and name != "background"]
            if ignored:
                log.warning("segmentation labels %s are not particle objects of the project; not picking them",
                            ", ".join(ignored))
    chosen = []
    for name in wanted:
        if name not in by_name:
            in_log = log_labels is not None and name in log_labels
            raise ConfigError(
                f"object '{name}' is {'in the segmentation log but ' if in_log else ''}not a particle object of "
                f"{cfg.copick_config}, so it has no radius to size its picks; particle objects: "
                f"{', '.join(by_name) or 'none'}"
            )
        obj = by_name[name]
        if cfg.localize.label is not None:  # octopi's -lbl: one label value for every object
            obj = replace(obj, label=int(cfg.localize.label))
        elif log_labels is not None and name in log_labels:
            obj = replace(obj, label=int(log_labels[name]))
        chosen.append(obj)
    if not chosen:
        raise ConfigError(f"no particle objects to pick in {cfg.copick_config}; check the pick objects and the "
                          "segmentation's labels")
    return chosen


def objects_for_report(cfg: RunConfig, root) -> list[ParticleObject]:
    """The objects a job picks, without loading its networks: the labels of its model config (or of the
    segmentation log, for a localize-only job)."""
    from pipeline import copick_io, overlay_files

    project_objects = copick_io.particle_objects(root)
    if cfg.has("segment"):
        from pipeline.models import read_model_config

        return objects_for_model(cfg, project_objects, read_model_config(cfg.model.configs[0]).labels)
    return objects_for_segmentation(cfg, project_objects,
                                    overlay_files.read_segmentation_labels(root, input_segmentation(cfg)))


class Claims:
    """This process's claims on runs: ``<overlay_root>/logs/claim-{key}/{run}.json`` (host, pid), created
    atomically, so that drivers started at once on one project and output share the runs.

    A claim is stale, and taken over, when its process is gone (same host) or, for another host, when it has not
    been refreshed for ``STALE_SECONDS`` (a heartbeat thread touches the claims held every ``HEARTBEAT_SECONDS``).
    """

    STALE_SECONDS = 600.0
    HEARTBEAT_SECONDS = 60.0

    def __init__(self, root, key: str):
        import os
        import socket
        import threading

        self.root, self.key = root, key
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def _path(self, run_id: str):
        from pipeline import overlay_files

        return overlay_files.claim_path(self.root, run_id, self.key)

    def acquire(self, run_id: str) -> str | None:
        """None when the run is now ours; else who holds it (``host:pid``)."""
        from pipeline import overlay_files

        path = self._path(run_id)
        for _ in range(3):
            if overlay_files.create_exclusive(path, {**self.me, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}):
                with self._lock:
                    self.held.add(run_id)
                self._start_heartbeat()
                return None
            holder = overlay_files.read_json(path)
            if holder is not None and holder.get("host") == self.me["host"] and holder.get("pid") == self.me["pid"]:
                with self._lock:
                    self.held.add(run_id)
                return None
            if not self._stale(path, holder):
                return f"{holder.get('host')}:{holder.get('pid')}" if holder else "a driver starting up"
            who = (f"{holder.get('host')}:{holder.get('pid')} (since {holder.get('since', '?')})" if holder
                   else "an unreadable claim file")
            log.warning("run %s: taking over the stale claim of %s: that driver stopped without finishing it (a "
                        "kill, a crash); the run is done again", run_id, who)
            path.unlink(missing_ok=True)
        return "another driver"

    def _stale(self, path, holder: dict | None) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:
            return age > 10.0  # unreadable: a claim its writer did not finish, or garbage
        if holder.get("host") == self.me["host"]:
            return not _pid_alive(holder.get("pid"))
        return age > self.STALE_SECONDS

    def release(self, run_id: str) -> None:
        with self._lock:
            if run_id not in self.held:
                return
            self.held.discard(run_id)
        self._path(run_id).unlink(missing_ok=True)

    def release_all(self) -> None:
        for run_id in list(self.held):
            self.release(run_id)
        self._stop.set()

    def _start_heartbeat(self) -> None:
        import os
        import threading

        if self._beat is not None:
            return

        def beat():
            while not self._stop.wait(self.HEARTBEAT_SECONDS):
                for run_id in list(self.held):
                    try:
                        os.utime(self._path(run_id))
                    except OSError:
                        pass

        self._beat = threading.Thread(target=beat, name="tomopick-claims", daemon=True)
        self._beat.start()


def _pid_alive(pid) -> bool:
    import os

    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
