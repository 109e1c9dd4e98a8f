"""Write a project's picks for subtomogram averaging (RELION 5 STAR) or as the CZII challenge's submission CSV.

--format star: one file per object, OUT/<object>.star (or OUT itself when it ends in .star and one object is
exported; an OUT ending in .csv is refused, as is one ending in .star with --format csv), a RELION 5 coordinate
table `data_particles` for every run together: rlnTomoName (the run), rlnCoordinate{X,Y,Z} in pixels of the
tomogram TOMO_ALG@VOXEL_SIZE (x_A / voxel size), rlnCenteredCoordinate{X,Y,Z}Angst from its centre (x_A - shape x
voxel size / 2, RELION 5's convention), rlnAngleRot/Tilt/Psi of the picks' orientations (0 for tomopick's picks)
and the score as rlnAutopickFigureOfMerit. RELION prefers the centred columns (relion_tomo_import_coordinates takes
such a file); it reads rlnCoordinate only without them, and then as tilt-series pixels. Numbers are written so that
they read back equal.

--format csv: OUT is one file `id,experiment,particle_type,x,y,z,score`, positions in Angstrom from the
tomogram's corner (copick's), ids from 0; the experiment is the run name (in a data-portal project the portal's
run name, e.g. TS_5_4, as the challenge names them).

Which picks: --user-id / --session-id (default octopi / 1, what localize writes), --objects, --run-ids,
--min-score (picks with a lower score are left out). Objects whose pick sets are empty get no STAR file when
others have picks; with no picks at all (empty pick sets, or all below --min-score) the files are written all the
same (the CSV's header; STAR tables with their column labels and no rows) with a warning. A pick set that does
not exist is an error that lists those there are.

Examples:
  tomopick export -c config.json --user-id octopi --session-id 1 --format star -o relion/
  tomopick export -c config.json --format csv -o submission.csv --min-score 0.2
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg, add_tomo_args, d
from pipeline.config import ExportConfig, LocalizeConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("--user-id", "-puid", dest="pick_user_id", default=None,
                   help=f"user id of the picks {d(LocalizeConfig, 'pick_user_id')}")
    p.add_argument("--session-id", "-psid", dest="pick_session_id", default=None,
                   help=f"session id of the picks {d(LocalizeConfig, 'pick_session_id')}")
    p.add_argument("--format", choices=choices("export", "format"), default=None,
                   help=f"star (RELION 5) or csv (the CZII challenge's) {d(ExportConfig, 'format')}")
    p.add_argument("-o", "--output", required=True,
                   help="star: a folder (one file per object) or FILE.star for one object; csv: the file (a .csv "
                        "name with --format star, or .star with csv, is refused)")
    p.add_argument("--objects", "-names", dest="object_names", default=None,
                   help="comma-separated objects (default: every particle object that has picks)")
    p.add_argument("-runs", "--run-ids", default=None, help="comma-separated runs (default: every run)")
    p.add_argument("--min-score", type=float, default=None,
                   help="leave out picks whose score is below this (default: keep all)")
    add_tomo_args(p)  # the tomogram the STAR coordinates refer to


def run(args) -> int:
    import logging
    from pathlib import Path

    import numpy as np

    from pipeline import atomic, copick_io, formats
    from pipeline.cli.common import known_run_ids, list_arg
    from pipeline.config import RunConfig, build, default
    from pipeline.config_checks import check_copick_id, check_min_score
    from pipeline.errors import ConfigError, RunError
    from pipeline.objects import select_objects
    from pipeline.selectors import resolve_tomo

    log = logging.getLogger("tomopick.export")
    source = "tomopick export"
    given = {k: v for k, v in {"format": args.format, "min_score": args.min_score}.items() if v is not None}
    opts = build(ExportConfig, given, source)
    check_min_score(opts.min_score, "'min_score' (--min-score)", source)
    loc = build(LocalizeConfig, {k: v for k, v in {"pick_user_id": args.pick_user_id,
                                                     "pick_session_id": args.pick_session_id}.items()
                                 if v is not None}, source, "localize")
    user, session = loc.pick_user_id, loc.pick_session_id
    check_copick_id(user, "--user-id", source)
    check_copick_id(session, "--session-id", source)
    tomo = resolve_tomo(args.voxel_size, args.tomo_alg, args.tomo_uri)
    voxel_size = tomo.voxel_size or default(RunConfig, "voxel_size")
    tomo_alg = tomo.tomo_alg or default(RunConfig, "tomo_alg")
    out = Path(args.output)
    _check_output_name(out, opts.format, format_given=args.format is not None)

    root = copick_io.open_project(args.config)
    objects = select_objects(copick_io.particle_objects(root), list_arg(args.object_names))
    runs = copick_io.run_names(root)
    wanted_runs = list_arg(args.run_ids)
    if wanted_runs:
        runs = known_run_ids(root, wanted_runs, args.config)

    # (run, object) -> (xyz Angstrom, rotations, scores), after --min-score; the pick sets that exist, empty or not
    picks, dropped, found_sets, had_picks = {}, 0, set(), set()
    for run_id in runs:
        for obj in objects:
            found = copick_io.read_picks_ang(root, run_id, obj.name, user, session)
            if found is None:
                continue
            found_sets.add(obj.name)
            xyz, rotations, scores = found
            if len(xyz):
                had_picks.add(obj.name)
            if opts.min_score is not None:
                keep = scores >= opts.min_score
                dropped += int(np.count_nonzero(~keep))
                xyz, rotations, scores = xyz[keep], rotations[keep], scores[keep]
            if len(xyz):  # an empty pick set (the pipeline writes one per object) exports nothing
                picks[(run_id, obj.name)] = (xyz, rotations, scores)
    total = sum(len(v[0]) for v in picks.values())
    if not found_sets:
        have = ", ".join(f"{u}/{s} ({n})" for (u, s), n in copick_io.pick_sets(root, set(runs)).items())
        raise RunError(f"{args.config}: no picks of {user}/{session} for {', '.join(o.name for o in objects)} in "
                       f"{len(runs)} run(s); the pick sets there are (user/session): {have or 'none'}; check "
                       "--user-id/--session-id")
    if dropped:
        log.info("left out %d picks with a score below %g", dropped, opts.min_score)
    if not picks:  # the files are written all the same, empty: 0 picks is an answer, not a missing input
        why = (f"all {dropped} picks have a score below --min-score {opts.min_score:g}" if dropped else
               f"the pick sets {user}/{session} of {', '.join(sorted(found_sets))} are empty")
        log.warning("exporting 0 picks: %s (%d run(s))", why, len(runs))
    if opts.format == "csv":
        if out.is_dir() or str(args.output).endswith(("/", "\\")):  # "dir/" names a folder even before it exists
            raise ConfigError(f"-o {args.output}: a folder; --format csv writes one file, e.g. -o submission.csv")
        names = {copick: portal for portal, copick in copick_io.run_aliases(root).items()}
        rows = [(names.get(r, r), o.name, *picks[(r, o.name)][::2]) for r in runs for o in objects
                if (r, o.name) in picks]
        atomic.write_text(out, formats.challenge_csv_text(rows))
        print(f"wrote {total} picks of {len({r for r, _ in picks})} runs to {out}")
        return 0

    with_picks = sorted({r for r, _ in picks})
    geometry = copick_io.tomogram_geometry(root, with_picks, voxel_size, tomo_alg)
    lacking = [r for r in with_picks if r not in geometry]
    if lacking:
        raise RunError(f"runs {lacking} have no tomogram {tomo_alg}@{voxel_size:g}, whose centre and pixels the STAR "
                       "coordinates refer to; pass --tomo-alg/--voxel-size (or --tomo-uri) of a tomogram they have")
    # objects with picks get a file each; with none, those that had picks before --min-score, else every pick set
    exported = ([o for o in objects if any((r, o.name) in picks for r in runs)] or
                [o for o in objects if o.name in had_picks] or [o for o in objects if o.name in found_sets])
    if out.suffix.lower() == ".star":
        if len(exported) != 1:
            have = "have picks" if picks else "have (empty) pick sets"
            raise ConfigError(f"-o {out}: one STAR file holds one object, but {len(exported)} {have} "
                              f"({', '.join(o.name for o in exported)}); give a folder or --objects NAME")
        targets = {exported[0].name: out}
    else:
        targets = {o.name: out / f"{o.name}.star" for o in exported}
    written = []
    for obj in exported:
        columns: dict[str, list] = {name: [] for name in formats.relion_column_names(scores=True)}
        for r in runs:
            if (r, obj.name) not in picks:
                continue
            xyz, rotations, scores = picks[(r, obj.name)]
            shape, vs = geometry[r]
            part = formats.relion_columns(formats.check_star_word(r, "run name"), xyz, shape, vs, rotations, scores)
            for key, values in part.items():
                columns[key].extend(values)
        comment = (f"{obj.name} picks {user}/{session} of {args.config}, written by tomopick export\n"
                   f"rlnCoordinate: pixels of {tomo_alg}@{voxel_size:g} A; rlnCenteredCoordinate*Angst: from its "
                   "centre (shape x voxel size / 2, RELION 5)")
        written.append(atomic.write_text(targets[obj.name], formats.star_text(columns, "particles", comment)))
    print(f"wrote {total} picks of {len(with_picks)} runs: " + ", ".join(str(p) for p in written))
    return 0


def _check_output_name(out, fmt: str, format_given: bool) -> None:
    """Refuse an -o whose extension says the other format: star reads -o x.csv as a folder to fill with
    OBJECT.star files, csv would write CSV text into x.star."""
    from pipeline.errors import ConfigError

    suffix = out.suffix.lower()
    named = f"--format {fmt}" + ("" if format_given else " (the default)")
    if fmt == "csv" and suffix == ".star":
        raise ConfigError(f"-o {out}: a .star name, but {named} writes the challenge's CSV; pass --format star for "
                          "RELION STAR, or give -o a .csv name")
    if fmt == "star" and suffix == ".csv" and not out.is_dir():
        raise ConfigError(f"-o {out}: a .csv name, but {named} writes RELION STAR (a folder of OBJECT.star files, or "
                          "FILE.star for one object); pass --format csv for the challenge's CSV, or give -o a folder "
                          "or a .star name")
