"""File formats at the edges of a project, without copick: MRC tomograms in; picks in and out as RELION 5 STAR,
the CZII challenge's CSV and copick's own pick JSON. Everything here is x, y, z Angstrom (as copick and these
formats are); ``pipeline.copick_io`` puts it into a project.

RELION 5 (``src/jaz/tomography/particle_set.cpp``): ``rlnCenteredCoordinate{X,Y,Z}Angst = x_A - size_x * pixel
/ 2``, the centre being half the tomogram's extent (not (size - 1) / 2); with a tomogram of ``n`` voxels of
``voxel_size`` A covering the same extent as the bin-1 one, that is ``x_A - n * voxel_size / 2`` at any binning.
``rlnCoordinate{X,Y,Z}`` here are pixels of the exported tomogram (``x_A / voxel_size``, index of the voxel
centre, 0-based), which RELION reads only when the centred columns are absent (and then as tilt-series pixels).
The CZII challenge's CSV (``id,experiment,particle_type,x,y,z``) is in Angstrom from the tomogram's corner,
copick's convention.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import TomopickError

log = logging.getLogger(__name__)


class FormatError(TomopickError):
    """A file that cannot be imported as asked (wrong shape, missing header values or columns)."""


# ----------------------------------------------------------------------------------------------------------------
# MRC


@dataclass(frozen=True)
class MrcInfo:
    path: Path
    shape_zyx: tuple[int, int, int]
    voxel_size: float  # Angstrom per voxel, isotropic: the header's unless given, to 3 decimals as copick keeps it
    header_voxel_size_xyz: tuple[float, float, float]
    mode: int


def read_mrc_header(path, voxel_size: float | None = None) -> MrcInfo:
    """Shape and voxel size of an MRC/REC tomogram without reading its data; every problem is a FormatError
    naming the file: not 3D (a 2D image or a single section), a voxel size of 0 in the header (unless given),
    unequal x/y/z voxel sizes, axes stored out of the usual order, complex data."""
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"MRC file '{path}': no such file")
    # permissive mode reads what it can and tells the rest as RuntimeWarnings: they go into our message or log line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                header, data = mrc.header, mrc.data
                shape = tuple(int(s) for s in data.shape) if data is not None else None
                vs = mrc.voxel_size
                header_vs = (float(vs.x), float(vs.y), float(vs.z))
                mode = int(header.mode)
                axes = (int(header.mapc), int(header.mapr), int(header.maps))
        except (ValueError, OSError) as exc:
            raise FormatError(f"'{path}' is not an MRC file ({exc}); give MRC/REC tomograms") from None
    said = list(dict.fromkeys(str(w.message) for w in caught))
    if shape is None:  # mrcfile found no data block it could read
        raise FormatError(f"'{path}' is not an MRC file ({said[0] if said else 'no data block'}); give MRC/REC "
                          "tomograms")
    if said:
        log.warning("MRC file '%s': %s (read anyway)", path, "; ".join(said))
    if len(shape) != 3 or min(shape) < 2:
        raise FormatError(f"MRC file '{path}': data of shape {shape} is not a 3D tomogram (z, y, x with more "
                          "than one section); a 2D image or an image stack cannot be imported")
    if mode in (3, 4):
        raise FormatError(f"MRC file '{path}': complex data (MRC mode {mode}) is not a tomogram")
    if axes != (1, 2, 3):
        raise FormatError(f"MRC file '{path}': axes stored as mapc/mapr/maps = {axes}, not 1/2/3 (x fastest); "
                          "reorder it first (e.g. IMOD's `clip flipyz` or `trimvol`)")
    if voxel_size is None:
        if not all(v > 0 and math.isfinite(v) for v in header_vs):
            raise FormatError(f"MRC file '{path}': the header's voxel size is {header_vs} A (x, y, z): cell "
                              "dimensions not set; pass --voxel-size (Angstrom per voxel)")
        if max(header_vs) - min(header_vs) > 1e-3 * max(header_vs):
            raise FormatError(f"MRC file '{path}': voxel sizes differ between axes {header_vs} A (x, y, z); copick "
                              "stores one voxel size per tomogram: resample it, or pass --voxel-size to override")
        voxel_size = header_vs[0]
    elif not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise FormatError(f"--voxel-size {voxel_size}: need Angstrom per voxel > 0")
    # copick names voxel-spacing folders VoxelSpacing{size:.3f} and finds them by equality: 3 decimals is what a
    # project keeps (and the header's float32 10.012 is 10.01200008...)
    return MrcInfo(path, shape, round(float(voxel_size), 3), header_vs, mode)


def read_mrc(info: MrcInfo) -> np.ndarray:
    """The tomogram as float32 (z, y, x) (one copy in memory)."""
    import mrcfile

    with warnings.catch_warnings():  # what mrcfile has to say was logged when the header was read
        warnings.simplefilter("ignore", RuntimeWarning)
        with mrcfile.mmap(info.path, mode="r", permissive=True) as mrc:
            return np.array(mrc.data, dtype=np.float32)


def write_mrc(path, volume_zyx: np.ndarray, voxel_size: float) -> Path:
    """A float32 MRC (tests and examples; ``voxel_size`` in Angstrom, 0 leaves the cell unset)."""
    import mrcfile

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(volume_zyx, dtype=np.float32))
        mrc.voxel_size = voxel_size
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# picks in


@dataclass
class PickTable:
    """Picks of one object in one run, as a file gave them: positions ``xyz_ang`` (N, 3) from the tomogram's
    corner, optional (N, 4, 4) transforms (rotation; zero translation) and scores; the file's user/session if
    it names them (copick JSON)."""

    run: str
    object_name: str
    xyz_ang: np.ndarray
    source: str
    scores: np.ndarray | None = None
    transforms: np.ndarray | None = None
    user_id: str | None = None
    session_id: str | None = None
    units: str = ""  # how the file's numbers were read, for messages about positions that make no sense


UNITS = {
    "star-pixels": "its rlnCoordinateX/Y/Z are read as pixels of the tomogram (Angstrom / voxel size): were they "
                   "written in Angstrom? Then divide them by the voxel size, or write rlnCenteredCoordinate*Angst",
    "star-centred": "its rlnCenteredCoordinateX/Y/ZAngst are read as Angstrom from the tomogram's centre (RELION "
                    "5): were they written in pixels, or for another tomogram (--voxel-size, --tomo-alg)?",
    "csv": "its x, y, z are read as Angstrom from the tomogram's corner (the challenge's CSV): were they written in "
           "other units (pixels: multiply them by the voxel size; nm: by 10), or for another tomogram?",
    "json": "its locations are read as Angstrom from the tomogram's corner (copick's): were they written in other "
            "units (pixels, nm), or for another tomogram?",
}


CENTERED = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
PIXELS = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
SCORE = "rlnAutopickFigureOfMerit"  # RELION's label for a picker's score


def read_star_table(path) -> dict[str, list]:
    """The particle block of a STAR file as columns (``rlnTomoName`` kept as text: run names like 16463 are
    not numbers)."""
    import starfile

    try:
        data = starfile.read(path, always_dict=True, parse_as_string=["rlnTomoName"])
    except Exception as exc:  # starfile/pandas raise many types for malformed files
        raise FormatError(f"STAR file '{path}': cannot read it ({type(exc).__name__}: {exc})") from None
    blocks = [b for name, b in data.items() if name != "optics" and hasattr(b, "columns")]
    chosen = data.get("particles") if hasattr(data.get("particles"), "columns") else (blocks[0] if blocks else None)
    if chosen is None:
        raise FormatError(f"STAR file '{path}': no particle table (a loop_ block) in it")
    return {c: chosen[c].tolist() for c in chosen.columns}


def read_star_picks(path, object_name: str, tomograms: dict, default_run: str | None = None) -> list[PickTable]:
    """Picks of ``object_name`` from a RELION STAR file, one table per ``rlnTomoName`` (``default_run`` when the
    column is absent). ``tomograms``: run -> (shape_zyx, voxel_size) of the tomogram the coordinates refer to:
    centred coordinates (preferred, as RELION 5) are put back on its centre, ``rlnCoordinate{X,Y,Z}`` are taken
    as its pixels."""
    cols = read_star_table(path)
    n = len(next(iter(cols.values()), []))
    if n == 0:  # a table without rows: no picks, whatever its columns
        return []
    if "rlnTomoName" in cols:
        runs = [str(r) for r in cols["rlnTomoName"]]
    elif default_run is not None:
        runs = [default_run] * n
    else:
        raise FormatError(f"STAR file '{path}': no rlnTomoName column and no single run to put the picks in; "
                          "import one tomogram with it, or add rlnTomoName")
    missing = sorted({r for r in runs if r not in tomograms})
    if missing:
        raise FormatError(f"STAR file '{path}': rlnTomoName {missing} are not runs with the tomogram the coordinates "
                          f"refer to (runs: {', '.join(sorted(tomograms)) or 'none'}); import those tomograms first "
                          "or check --tomo-alg/--voxel-size")
    if all(c in cols for c in CENTERED):
        coords = np.array([cols[c] for c in CENTERED], dtype=np.float64).T.reshape(-1, 3)
        centres = np.array([_centre_xyz_ang(*tomograms[r]) for r in runs]).reshape(-1, 3)
        xyz, units = coords + centres, UNITS["star-centred"]
    elif all(c in cols for c in PIXELS):
        coords = np.array([cols[c] for c in PIXELS], dtype=np.float64).T.reshape(-1, 3)
        xyz = coords * np.array([tomograms[r][1] for r in runs], dtype=np.float64)[:, None]
        units = UNITS["star-pixels"]
    else:
        raise FormatError(f"STAR file '{path}': needs {', '.join(CENTERED)} (RELION 5) or {', '.join(PIXELS)}")
    transforms = None
    if all(c in cols for c in ANGLES):
        eulers = np.array([cols[c] for c in ANGLES], dtype=np.float64).T.reshape(-1, 3)
        transforms = _transforms(rotations_from_relion(eulers))
    scores = np.array(cols[SCORE], dtype=np.float64) if SCORE in cols else None
    return _split_by_run(runs, object_name, xyz, str(path), scores, transforms, units)


def read_challenge_csv(path, run_aliases: dict[str, str] | None = None) -> list[PickTable]:
    """Picks from the CZII challenge's CSV (``id,experiment,particle_type,x,y,z`` in Angstrom; a ``score``
    column if present). ``run_aliases`` maps an experiment name to the project's run name (portal projects name
    runs by their id)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"experiment": str, "particle_type": str})
    except Exception as exc:  # pandas raises many types for malformed files
        raise FormatError(f"CSV file '{path}': cannot read it ({type(exc).__name__}: {exc})") from None
    need = ["experiment", "particle_type", "x", "y", "z"]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise FormatError(f"CSV file '{path}': no column(s) {absent}; expected the CZII challenge's "
                          "id,experiment,particle_type,x,y,z (Angstrom)")
    aliases = run_aliases or {}
    out = []
    for (run, name), group in df.groupby(["experiment", "particle_type"], sort=True):
        xyz = group[["x", "y", "z"]].to_numpy(dtype=np.float64)
        scores = group["score"].to_numpy(dtype=np.float64) if "score" in group.columns else None
        out.append(PickTable(aliases.get(str(run), str(run)), str(name), xyz, str(path), scores, units=UNITS["csv"]))
    return out


def read_copick_picks_json(path) -> PickTable:
    """A copick pick file read as plain JSON: also the CZII Kaggle layout's ``Picks/ribosome.json``, whose name
    copick cannot parse (it expects ``USER_SESSION_OBJECT.json``). Run, object, user and session come from the
    file (the run, when null, from the ``ExperimentRuns/<run>/Picks`` folder it sits in)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        points = doc.get("points") or []
        xyz = np.array([[p["location"][k] for k in "xyz"] for p in points], dtype=np.float64).reshape(-1, 3)
        transforms = np.array([p.get("transformation_") or np.eye(4) for p in points], dtype=np.float64)
        scores = np.array([1.0 if p.get("score") is None else p["score"] for p in points], dtype=np.float64)
        object_name = doc["pickable_object_name"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"pick file '{path}': not a copick pick JSON ({type(exc).__name__}: {exc})") from None
    run = doc.get("run_name") or (path.parent.parent.name if path.parent.name == "Picks" else None)
    if not run:
        raise FormatError(f"pick file '{path}': no run_name in it and not inside ExperimentRuns/<run>/Picks")
    transforms = transforms.reshape(-1, 4, 4)
    xyz = xyz + transforms[:, :3, 3]  # copick's particle centre: location + the transform's translation
    transforms[:, :3, 3] = 0.0
    return PickTable(str(run), str(object_name), xyz, str(path), scores, transforms,
                     None if doc.get("user_id") is None else str(doc["user_id"]),
                     None if doc.get("session_id") is None else str(doc["session_id"]), UNITS["json"])


def check_within_tomogram(table: PickTable, shape_zyx, voxel_size: float, tomogram: str) -> None:
    """Refuse picks outside the tomogram of ``shape_zyx`` voxels of ``voxel_size`` A (with one voxel of tolerance
    at its faces), which a units mistake gives (Angstrom read as pixels, or pixels as Angstrom); the message names
    the file, the run, how many lie outside, their range against the tomogram's extent and how the file was read."""
    xyz = np.asarray(table.xyz_ang, dtype=np.float64).reshape(-1, 3)
    extent = np.asarray(shape_zyx, dtype=np.float64)[::-1] * float(voxel_size)
    outside = ~np.all((xyz >= -voxel_size) & (xyz <= extent + voxel_size), axis=1)  # NaN counts as outside
    if not outside.any():
        return
    found = ", ".join(f"{a} {lo:.6g}..{hi:.6g}" for a, lo, hi in zip("xyz", xyz.min(axis=0), xyz.max(axis=0)))
    spans = ", ".join(f"{a} 0..{e:.6g}" for a, e in zip("xyz", extent))
    voxels = " x ".join(str(int(n)) for n in shape_zyx[::-1])
    raise FormatError(f"pick file '{table.source}': {int(outside.sum())} of {len(xyz)} {table.object_name} picks of "
                      f"run '{table.run}' lie outside its tomogram {tomogram}: the picks span {found} A, the "
                      f"tomogram {spans} A (x, y, z: {voxels} voxels of {voxel_size:g} A; one voxel of tolerance)"
                      f"; {table.units or 'check the units the file was written in'}. Nothing was imported")


def pick_file_kind(path) -> str:
    suffix = Path(path).suffix.lower()
    kinds = {".star": "star", ".csv": "csv", ".json": "json"}
    if suffix in (".mrc", ".rec", ".map"):
        raise FormatError(f"pick file '{path}' looks like a tomogram: give the tomograms before --picks")
    if suffix not in kinds:
        raise FormatError(f"pick file '{path}': unknown type {suffix!r}; give a RELION .star, the challenge's "
                          ".csv or a copick .json")
    return kinds[suffix]


def _split_by_run(runs, object_name, xyz, source, scores, transforms, units) -> list[PickTable]:
    runs = np.asarray(runs, dtype=object)
    out = []
    for run in dict.fromkeys(runs.tolist()):
        sel = runs == run
        out.append(PickTable(run, object_name, xyz[sel], source, None if scores is None else scores[sel],
                             None if transforms is None else transforms[sel], units=units))
    return out


def _centre_xyz_ang(shape_zyx, voxel_size: float) -> np.ndarray:
    """RELION 5's tomogram centre in Angstrom: half the extent (shape x voxel size / 2)."""
    return np.asarray(shape_zyx, dtype=np.float64)[::-1] * float(voxel_size) / 2.0


def _transforms(rotations: np.ndarray) -> np.ndarray:
    out = np.broadcast_to(np.eye(4), (len(rotations), 4, 4)).copy()
    out[:, :3, :3] = rotations
    return out


# ----------------------------------------------------------------------------------------------------------------
# angles: copick rotations (object -> tomogram) <-> RELION's ZYZ Euler angles, as copick.util.formats does


def relion_angles(rotations: np.ndarray) -> np.ndarray:
    """(N, 3) rlnAngleRot/Tilt/Psi in degrees of (N, 3, 3) rotations (identities give zeros exactly)."""
    from scipy.spatial.transform import Rotation

    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    eulers = np.zeros((len(rotations), 3))
    turned = ~np.all(np.isclose(rotations, np.eye(3)), axis=(1, 2))
    if turned.any():
        import warnings

        with warnings.catch_warnings():  # tilt 0 or 180 ("gimbal lock"): rot + psi is what is defined; psi = 0
            warnings.filterwarnings("ignore", message="Gimbal lock", category=UserWarning)
            eulers[turned] = Rotation.from_matrix(rotations[turned]).inv().as_euler("ZYZ", degrees=True)
    return eulers


def rotations_from_relion(eulers_deg: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    eulers_deg = np.asarray(eulers_deg, dtype=np.float64).reshape(-1, 3)
    out = np.broadcast_to(np.eye(3), (len(eulers_deg), 3, 3)).copy()
    turned = np.any(eulers_deg != 0, axis=1)
    if turned.any():
        out[turned] = Rotation.from_euler("ZYZ", eulers_deg[turned], degrees=True).inv().as_matrix()
    return out


# ----------------------------------------------------------------------------------------------------------------
# picks out


def _number(value) -> str:
    """Shortest text that reads back as the same float (Python's repr), integers as integers."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def relion_column_names(scores: bool) -> list[str]:
    """The columns ``relion_columns`` writes, in order (an export with no picks writes them over no rows)."""
    return ["rlnTomoName", *PIXELS, *CENTERED, *ANGLES] + ([SCORE] if scores else [])


def relion_columns(run: str, xyz_ang: np.ndarray, shape_zyx, voxel_size: float, rotations=None,
                   scores=None) -> dict[str, list]:
    """RELION 5 columns of one run's picks: rlnTomoName, rlnCoordinate{X,Y,Z} (pixels of the tomogram of
    ``shape_zyx`` at ``voxel_size``), rlnCenteredCoordinate{X,Y,Z}Angst (from its centre), the angles and, with
    scores, rlnAutopickFigureOfMerit."""
    xyz = np.asarray(xyz_ang, dtype=np.float64).reshape(-1, 3)
    pixels = xyz / float(voxel_size)
    centred = xyz - _centre_xyz_ang(shape_zyx, voxel_size)
    n = len(xyz)
    angles = relion_angles(rotations) if rotations is not None else np.zeros((n, 3))
    cols = {"rlnTomoName": [run] * n}
    cols.update({c: pixels[:, i].tolist() for i, c in enumerate(PIXELS)})
    cols.update({c: centred[:, i].tolist() for i, c in enumerate(CENTERED)})
    cols.update({c: angles[:, i].tolist() for i, c in enumerate(ANGLES)})
    if scores is not None:
        cols[SCORE] = np.asarray(scores, dtype=np.float64).reshape(-1).tolist()
    return cols


def star_text(columns: dict[str, list], block: str = "particles", comment: str = "") -> str:
    """One STAR loop block (``data_<block>``) of equal-length columns; numbers written so they read back equal."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"STAR columns of unequal length {sorted(lengths)}")
    lines = [f"# {line}" for line in comment.splitlines()] + ["", f"data_{block}", "", "loop_"]
    lines += [f"_{name} #{i}" for i, name in enumerate(columns, start=1)]
    for row in zip(*columns.values()):
        lines.append("\t".join(v if isinstance(v, str) else _number(v) for v in row))
    return "\n".join(lines) + "\n\n"


def check_star_word(value: str, what: str) -> str:
    """STAR values are whitespace-separated words: a run name with a space or quote cannot be one."""
    if not value or any(c.isspace() for c in value) or value[0] in "'\"_#" or value.startswith(("data_", "loop_")):
        raise FormatError(f"{what} {value!r} cannot be written as a STAR value (spaces, quotes, or a leading "
                          "'_', '#', 'data_' or 'loop_'); rename it")
    return value


CSV_HEADER = ("id", "experiment", "particle_type", "x", "y", "z")


def challenge_csv_text(rows) -> str:
    """The challenge's submission CSV from (experiment, particle_type, xyz_ang (N, 3), scores or None) tuples:
    ``id,experiment,particle_type,x,y,z`` plus ``score`` when any has scores; ids count from 0."""
    rows = list(rows)
    with_scores = any(r[3] is not None for r in rows)
    header = list(CSV_HEADER) + (["score"] if with_scores else [])
    lines = [",".join(header)]
    next_id = 0
    for experiment, particle_type, xyz, scores in rows:
        for name in (experiment, particle_type):
            if any(c in name for c in ',"\n\r'):
                raise FormatError(f"{name!r} cannot be a CSV field as is (a comma, quote or line break); rename it")
        for i, (x, y, z) in enumerate(np.asarray(xyz, dtype=np.float64).reshape(-1, 3)):
            fields = [str(next_id), experiment, particle_type, _number(x), _number(y), _number(z)]
            if with_scores:
                fields.append(_number(scores[i]) if scores is not None else "")
            lines.append(",".join(fields))
            next_id += 1
    return "\n".join(lines) + "\n"
