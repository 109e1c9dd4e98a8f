"""Import MRC/REC tomograms, and ground-truth picks, into a copick project (created if it does not exist).

Each FILE.mrc becomes run FILE (or the next of --run-names) with tomogram TOMO_ALG at the voxel size in its
header (or --voxel-size), stored as OME-Zarr in the project's overlay. A new project gets a filesystem config at
-c CONFIG.json with its overlay in CONFIG's folder (overlay/) and the pickable objects of --objects-from (another
copick config), else the six CZII challenge particles (names, labels, radii, weights as `tomopick synth`).
Refused before anything is written: a file that is not MRC or not a 3D tomogram, a header voxel size of 0 (give
--voxel-size), unequal x/y/z voxel sizes, two files for one run, a run that has TOMO_ALG@VOXEL_SIZE already, a
run name (from a file name or --run-names) with whitespace, a comma, a quote or bracket, or '/', or starting with
'.', '_' or '#' (run lists like -runs, STAR and CSV files could not carry it: "tomo B.mrc" needs --run-names).
NaN or inf voxels are imported as they are, with a warning that counts them (a job fails such a run unless
--nonfinite zero).

--picks FILE ... adds picks (with --user-id and --session-id; for ground truth e.g. data-portal / 0):
  *.star  RELION: rlnTomoName = run (or the one run imported), rlnCenteredCoordinate{X,Y,Z}Angst from the
          tomogram's centre (RELION 5; centre = shape x voxel size / 2) or rlnCoordinate{X,Y,Z} in its pixels;
          angles and rlnAutopickFigureOfMerit kept. The object is --object, else the file name (ribosome.star).
  *.csv   the CZII challenge's id,experiment,particle_type,x,y,z (Angstrom); a score column is kept.
  *.json  copick pick files, also the Kaggle layout's overlay/ExperimentRuns/<run>/Picks/<object>.json that copick
          itself cannot read (its name is not USER_SESSION_OBJECT.json): run, object, user and session from
          the file (user curation, session 0 in the Kaggle data) unless --user-id/--session-id are given.
Picks go to runs of the project or runs imported by this command; existing pick sets are kept unless
--overwrite. A file with picks outside their run's tomogram (TOMO_ALG at the voxel size, one voxel of tolerance)
is refused before anything is written: a units mistake (STAR pixels written in Angstrom, CSV in pixels). Picks of
a run without that tomogram are not checked.

Examples:
  tomopick import-mrc -c project/config.json TS_01.mrc TS_02.rec --tomo-alg denoised
  tomopick import-mrc -c project/config.json tomo.mrc --run-names TS_7 --voxel-size 10.012 \\
      --picks ribosome.star --user-id data-portal --session-id 0
  tomopick import-mrc -c kaggle/config.json --picks train/overlay/ExperimentRuns/*/Picks/*.json
"""

from __future__ import annotations

from pipeline.cli.common import TRUE, add_config_arg, d
from pipeline.config import RunConfig


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("files", nargs="*", metavar="FILE.mrc", help="MRC/REC tomograms (z, y, x sections)")
    p.add_argument("-vs", "--voxel-size", type=float, default=None,
                   help="voxel size in Angstrom (default: each file's header; a header that differs is logged); also "
                        "the tomograms picks refer to")
    p.add_argument("-alg", "--tomo-alg", default=None,
                   help=f"tomogram type to store them as {d(RunConfig, 'tomo_alg')}")
    p.add_argument("--run-names", default=None,
                   help="comma-separated run names, one per file (default: the file names without extension); "
                        "a run name has no whitespace, comma, quote, bracket or '/' and does not start with '.', "
                        "'_' or '#'")
    p.add_argument("--objects-from", default=None, metavar="CONFIG.json",
                   help="a new project takes the pickable objects of this copick config (default: the six CZII "
                        "challenge particles)")
    p.add_argument("--picks", nargs="+", default=None, metavar="FILE",
                   help="pick files to import: RELION .star, the challenge's .csv, copick .json")
    p.add_argument("--user-id", default=None, help="user id of the imported picks (required for .star/.csv)")
    p.add_argument("--session-id", default=None, help="session id of the imported picks (required for .star/.csv)")
    p.add_argument("--object", default=None,
                   help="object of the picks of a .star file (default: the file name, e.g. ribosome.star)")
    p.add_argument("--overwrite", **TRUE, help="replace pick sets that exist already")


def _run_name(path) -> str:
    from pathlib import Path

    name = Path(path).name
    for suffix in (".mrc", ".rec", ".map", ".st", ".ali"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _run_names(run_names: str | None, files) -> list[str]:
    """One run name per file: those of --run-names (split on commas only, so that a name with a space is named
    as such rather than counted as two), else the file names; refused before anything is written when a name is
    one that run lists, STAR or CSV files or copick's folders cannot carry."""
    from pipeline.config_checks import run_name_like, run_name_problem
    from pipeline.errors import ConfigError

    if run_names is not None:
        names = [n.strip().strip("'\"") for n in str(run_names).strip().strip("[]").split(",")]
        for name in names:
            problem = run_name_problem(name)
            if problem:
                like = run_name_like(name)
                raise ConfigError(f"--run-names {run_names!r}: the run name {name!r} {problem}; give names without "
                                  f"that{f', e.g. {like!r}' if like else ''} (names in --run-names are separated "
                                  "by commas)")
        if len(names) != len(files):
            raise ConfigError(f"--run-names {run_names!r} gives {len(names)} name(s) for {len(files)} file(s); give "
                              "one per file, separated by commas")
        return names
    names = [_run_name(f) for f in files]
    for name, path in zip(names, files):
        problem = run_name_problem(name)
        if problem:
            likes = [run_name_like(n) or n for n in names]
            raise ConfigError(f"'{path}': the run name {name!r} taken from the file name {problem}; pass "
                              f"--run-names with names without that, one per file, e.g. --run-names "
                              f"{','.join(likes)}")
    return names


def run(args) -> int:
    import logging
    from pathlib import Path

    import numpy as np

    from pipeline import copick_io, formats
    from pipeline.config import default
    from pipeline.config_checks import check_copick_id
    from pipeline.errors import ConfigError

    log = logging.getLogger("tomopick.import")
    source = "tomopick import-mrc"
    if not args.files and not args.picks:
        raise ConfigError(f"{source}: nothing to import; give MRC files and/or --picks FILE")
    tomo_alg = args.tomo_alg or default(RunConfig, "tomo_alg")
    if not tomo_alg.strip() or "/" in tomo_alg:
        raise ConfigError(f"--tomo-alg {tomo_alg!r}: a tomogram type is a plain name, e.g. wbp or denoised")

    # 1. everything is read and checked before anything is written
    infos = [formats.read_mrc_header(f, args.voxel_size) for f in args.files]
    for info in infos:
        header = info.header_voxel_size_xyz
        if args.voxel_size is not None and max(header) > 0 and \
                max(abs(v - info.voxel_size) for v in header) > 1e-3 * info.voxel_size:
            same = max(header) - min(header) <= 1e-3 * max(header)
            shown = f"{header[0]:g}" if same else "/".join(f"{v:g}" for v in header) + " (x/y/z)"
            log.info("'%s': its header says %s A per voxel; using --voxel-size %g", info.path, shown, info.voxel_size)
    names = _run_names(args.run_names, args.files)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        clash = "; ".join(f"run {n!r}: {', '.join(str(i.path) for m, i in zip(names, infos) if m == n)}"
                          for n in twice[:3])
        how = ("give each file its own name in --run-names" if args.run_names
               else "the run names come from the file names: pass --run-names, one per file")
        raise ConfigError(f"two tomograms for one run ({clash}); {how}")

    config = Path(args.config)
    root = copick_io.open_project(config) if config.exists() else None
    if root is not None:
        if args.objects_from:
            log.warning("--objects-from is ignored: project %s exists and keeps its objects", config)
        existing = set(copick_io.run_names(root))
        clash = [n for n, i in zip(names, infos) if n in existing and
                 copick_io.has_tomogram(root, n, i.voxel_size, tomo_alg)]
        if clash:
            raise ConfigError(f"{config}: runs {clash} have a tomogram {tomo_alg} at that voxel size already; import "
                              "them under other names (--run-names) or types (--tomo-alg), or delete them first")
        object_names = [o.name for o in copick_io.particle_objects(root)]
    else:
        objects = _new_objects(args.objects_from)
        object_names = [o["name"] for o in objects if o.get("is_particle", True)]
        existing = set()

    tables = _read_picks(args, root, names, infos, tomo_alg, source) if args.picks else []
    for t in tables:
        if t.run not in existing and t.run not in names:
            raise ConfigError(f"pick file '{t.source}': run '{t.run}' is neither in the project nor imported now; "
                              f"runs: {', '.join(sorted(existing | set(names))) or 'none'}")
        if t.object_name not in object_names:
            raise ConfigError(f"pick file '{t.source}': '{t.object_name}' is not a particle object of the project "
                              f"({', '.join(object_names)}); {_object_advice(t.source)}")
        check_copick_id(t.user_id, f"the user id of '{t.source}'", source)
        check_copick_id(t.session_id, f"the session id of '{t.source}'", source)
        if root is not None and t.run in existing and not args.overwrite and \
                copick_io.picks_exist(root, t.run, t.object_name, t.user_id, t.session_id):
            raise ConfigError(f"run '{t.run}' has picks {t.object_name} {t.user_id}/{t.session_id} already "
                              f"({t.source} would replace them); pass --overwrite to replace them")
    keys = [(t.run, t.object_name, t.user_id, t.session_id) for t in tables]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        sources = {k: sorted({str(t.source) for t, kt in zip(tables, keys) if kt == k}) for k in twice[:3]}
        clash = "; ".join(f"run {k[0]!r}, {k[1]} {k[2]}/{k[3]}: {', '.join(files)}" for k, files in sources.items())
        raise ConfigError(f"two pick files give the same pick set ({clash}); import one of them, or give the other "
                          "another --session-id in a second import")

    # 2. write: the project, each tomogram whole (removed again on failure), then the picks
    if root is None:
        copick_io.new_project_config(config, objects, name="tomopick import",
                                     description="Tomograms imported from MRC files by `tomopick import-mrc`.")
        root = copick_io.open_project(config)
        log.info("created copick project %s (overlay %s)", config, copick_io.overlay_root(root))
    lines = []
    for name, info in _progress(list(zip(names, infos)), "import-mrc: tomograms"):
        volume = formats.read_mrc(info)
        nonfinite = int(volume.size - np.count_nonzero(np.isfinite(volume)))
        copick_io.write_tomogram(root, name, volume, info.voxel_size, tomo_alg)
        del volume
        if nonfinite:  # imported as they are: said now, not when a job meets them
            log.warning("run %s: %d voxel(s) of %s are NaN or inf; a job segmenting it fails that run unless "
                        "--nonfinite zero (segment.nonfinite: zero) sets them to 0", name, nonfinite, info.path)
        shape = "x".join(map(str, info.shape_zyx))
        log.info("run %s: tomogram %s@%g (%s, z x y x x) from %s", name, tomo_alg, info.voxel_size, shape, info.path)
        lines.append(f"run {name}: {tomo_alg}@{info.voxel_size:g} {shape} <- {info.path}")
    for t in tables:
        copick_io.write_picks_ang(root, t.run, t.object_name, t.xyz_ang, t.user_id, t.session_id,
                                  scores=t.scores, transforms=t.transforms)
        lines.append(f"run {t.run}: {len(t.xyz_ang)} picks {t.object_name} {t.user_id}/{t.session_id} <- {t.source}")
    print("\n".join(lines + [f"project: {config}"]))
    return 0


def _object_advice(source: str) -> str:
    """How to name the object of a pick file of that kind (only a STAR file takes it from --object)."""
    from pipeline import formats

    kind = formats.pick_file_kind(source)
    where = {"star": "pass --object NAME (the default is the file's name)",
             "csv": "rename it in the file's particle_type column",
             "json": "rename it in the file's pickable_object_name"}[kind]
    return f"{where}, or import into a project that has that object (a new project takes the objects of --objects-from CONFIG.json)"


def _new_objects(objects_from) -> list[dict]:
    from pipeline import copick_io
    from pipeline.synthetic import copick_config_dict

    if objects_from:
        return copick_io.pickable_object_dicts(objects_from)
    return copick_config_dict(".")["pickable_objects"]  # the six CZII challenge particles


def _read_picks(args, root, names, infos, tomo_alg, source):
    """PickTables of every --picks file, with user and session filled in; picks outside their run's tomogram (when
    the run has it) are refused."""
    import logging

    from pipeline import copick_io, formats
    from pipeline.config import RunConfig, default
    from pipeline.errors import ConfigError

    log = logging.getLogger("tomopick.import")
    voxel_size = args.voxel_size or default(RunConfig, "voxel_size")
    geometry = {n: (i.shape_zyx, i.voxel_size) for n, i in zip(names, infos)}
    tomogram = {n: f"{tomo_alg}@{i.voxel_size:g}" for n, i in zip(names, infos)}
    aliases = {}
    if root is not None:
        others = [r for r in copick_io.run_names(root) if r not in geometry]
        geometry.update(copick_io.tomogram_geometry(root, others, voxel_size, tomo_alg))
        aliases = copick_io.run_aliases(root)
    tables = []
    for path in args.picks:
        kind = formats.pick_file_kind(path)
        if kind == "star":
            from pathlib import Path

            obj = args.object or Path(path).stem
            found = formats.read_star_picks(path, obj, geometry, default_run=names[0] if len(names) == 1 else None)
        elif kind == "csv":
            found = formats.read_challenge_csv(path, aliases)
        else:
            found = [formats.read_copick_picks_json(path)]
        if not sum(len(t.xyz_ang) for t in found):
            # no rows name a run or an object, so there is no pick set to write
            log.warning("pick file '%s': 0 picks in it; nothing imported from it", path)
        for t in found:
            t.user_id = args.user_id if args.user_id is not None else t.user_id
            t.session_id = args.session_id if args.session_id is not None else t.session_id
            if t.user_id is None or t.session_id is None:
                raise ConfigError(f"{source}: pick file '{path}' names no user/session; pass --user-id and "
                                  "--session-id (e.g. data-portal and 0 for ground truth)")
            if t.run in geometry:  # a run without the tomogram: its extent is not known, nothing to check
                formats.check_within_tomogram(t, *geometry[t.run], tomogram.get(t.run, f"{tomo_alg}@{voxel_size:g}"))
        tables += found
    return tables


def _progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=None) if len(items) > 1 else items
