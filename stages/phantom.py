"""The demo cohort's patients, written as real MR DICOM in the challenge layout.

Two anatomies: ``brain`` (the MNI152 template's grey matter, white matter and CSF in a scalp and
skull shell, with a per-patient rotation, scale and shift; :mod:`stages.anatomy`) and ``phantom``
(ellipsoids: head, brain, ventricles). Either way each patient has a latent score
``f ~ N(strength * y, 1)`` where ``y`` is the MGMT label. The score sets the tumour's
necrotic-core fraction and the brightness of its enhancing rim; every other property (head size
and pose, tumour size and place, oedema, scanner scaling, noise) is drawn independently of the
label. Images therefore carry at most the information in ``f``, and the Bayes-optimal
patient-level AUC is that of ``f`` itself: ``Phi(strength / sqrt(2))`` in the population, and
``roc_auc_score(y, f)`` on the patients actually written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from stages.challenge import FAULTY_IDS, SERIES

FOV_MM = 220.0
HEAD_MM = np.array([72.0, 90.0, 78.0])  # semi-axes along x (L), y (P), z (S)
# tissue -> intensity per series (arbitrary scanner units); rim/core of T1wCE depend on f
TISSUES = ("air", "scalp", "skull", "brain", "csf", "oedema", "rim", "core")
INTENSITY = {
    "T1w": (0, 600, 60, 480, 120, 400, 450, 220),
    "T1wCE": (0, 600, 60, 480, 120, 400, 900, 180),
    "T2w": (0, 350, 40, 450, 1000, 800, 650, 900),
    "FLAIR": (0, 300, 40, 450, 80, 850, 600, 300),
}
# brain anatomy: the head shell around the template brain (semi-axes, mm, before the patient's scale)
BRAIN_HEAD_MM = np.array([73.0, 90.0, 74.0])
# per series: grey matter, white matter, CSF, then the shell and lesion as in TISSUES
# (T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF suppressed, oedema bright; T1wCE: enhancing rim)
BRAIN_INTENSITY = {
    "T1w": {"gm": 380, "wm": 520, "csf": 110, "scalp": 600, "skull": 60, "oedema": 330, "rim": 420, "core": 190},
    "T1wCE": {"gm": 390, "wm": 520, "csf": 110, "scalp": 620, "skull": 60, "oedema": 340, "rim": 950, "core": 170},
    "T2w": {"gm": 560, "wm": 420, "csf": 1000, "scalp": 350, "skull": 40, "oedema": 860, "rim": 650, "core": 960},
    "FLAIR": {"gm": 480, "wm": 380, "csf": 70, "scalp": 300, "skull": 40, "oedema": 880, "rim": 620, "core": 280},
}
# (row direction, column direction) for each acquisition plane, in LPS
PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
# brain anatomy: the share of series acquired in an oblique plane and their largest tilt per axis
OBLIQUE_SHARE, OBLIQUE_MAX_DEG = 0.1, 20.0
ENCODINGS = {"rle": RLELossless, "jpegls": JPEGLSLossless}


@dataclass
class SeriesSpec:
    """How one series is acquired and stored."""

    plane: str = "axial"
    first_number: int = 1
    number_step: int = 1
    descending: bool = False
    monochrome1: bool = False
    encoding: str | None = None
    slope: float = 1.0
    intercept: float = 0.0
    scale: float = 1.0
    slices_factor: float = 1.0  # slices of this series relative to the cohort's setting
    tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # an oblique plane: turned about x, y, z
    matrix: int | None = None  # rows and columns, when not the cohort's image size

    def directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column directions (LPS) of the acquisition plane, turned by ``tilt_deg``."""
        row_dir, col_dir = (np.array(d) for d in PLANES[self.plane])
        if any(self.tilt_deg):  # untilted planes keep their exact cosines (and so their files)
            turn = rotation(np.array(self.tilt_deg))
            row_dir, col_dir = turn @ row_dir, turn @ col_dir
        return row_dir, col_dir


@dataclass
class PatientSpec:
    """Everything that determines one phantom patient."""

    pid: str
    label: int
    score: float
    head_scale: float
    tumour_centre: np.ndarray
    tumour_radius: float
    core_ratio: float
    rim_boost: float
    oedema_ratio: float
    bias: np.ndarray
    series: dict[str, SeriesSpec] = field(default_factory=dict)
    anatomy: str = "phantom"
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # brain: patient <- template
    brain_scale: float = 1.0
    shift: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tumour_axes: np.ndarray = field(default_factory=lambda: np.ones(3))


def population_bayes_auc(strength: float) -> float:
    """Population AUC of the latent score: ``Phi(strength / sqrt(2))``."""
    return 0.5 * (1.0 + math.erf(strength / 2.0))


def choose_ids(*, n_train: int, n_test: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Distinct 5-digit IDs from the challenge's range; the organisers' faulty IDs are in train."""
    pool = np.setdiff1d(np.arange(0, 1011), [int(i) for i in FAULTY_IDS])
    picked = rng.choice(pool, size=n_train + n_test - len(FAULTY_IDS), replace=False)
    train = sorted([f"{i:05d}" for i in picked[: n_train - len(FAULTY_IDS)]] + list(FAULTY_IDS))
    test = sorted(f"{i:05d}" for i in picked[n_train - len(FAULTY_IDS) :])
    return train, test


def matrix_sizes(smallest: int, largest: int) -> tuple[int, ...]:
    """In-plane matrix sizes a series may have: both ends and the multiples of 64 between them."""
    return tuple(sorted({smallest, largest, *range(64 * (smallest // 64 + 1), largest, 64)}))


def make_patient(
    *,
    pid: str,
    seed: int,
    strength: float,
    prevalence: float,
    quirks: bool,
    anatomy: str = "phantom",
    matrices: tuple[int, ...] = (),
) -> PatientSpec:
    """Draw one patient from its own seeded stream (independent of cohort size); each series'
    in-plane size is drawn from ``matrices`` when given (else it is the cohort's)."""
    rng = np.random.default_rng([seed, int(pid)])
    label = int(rng.random() < prevalence)
    score = float(rng.normal(strength * label, 1.0))
    side = rng.choice([-1.0, 1.0])
    spec = PatientSpec(
        pid=pid,
        label=label,
        score=score,
        head_scale=float(rng.uniform(0.92, 1.08)),
        tumour_centre=np.array([side * rng.uniform(22, 34), rng.uniform(-30, 30), rng.uniform(-12, 14)]),
        tumour_radius=float(rng.uniform(17, 26)),
        core_ratio=float(0.45 + 0.3 * np.tanh(score / 2.0)),
        rim_boost=float(1.0 + 0.25 * np.tanh(score / 2.0)),
        oedema_ratio=float(rng.uniform(1.4, 1.9)),
        bias=rng.normal(0.0, 0.002, size=3),
    )
    for name in SERIES:
        s = SeriesSpec(scale=float(rng.uniform(0.6, 1.6)))
        if quirks:
            s.plane = str(rng.choice(["axial", "axial", "axial", "sagittal", "coronal"]))
            s.first_number = int(rng.integers(1, 400))
            s.number_step = int(rng.choice([1, 1, 2, 3]))
            s.descending = bool(rng.random() < 0.3)
            s.monochrome1 = bool(rng.random() < 0.04)
            s.encoding = str(rng.choice(["rle", "jpegls"])) if rng.random() < 0.06 else None
            if rng.random() < 0.2:
                s.slope, s.intercept = 2.0, -1024.0
        spec.series[name] = s
    if anatomy == "brain":  # drawn after everything else: the phantom's patients stay as they were
        place_brain(spec, np.random.default_rng([seed, int(pid), 2]), quirks=quirks)
    if len(matrices) > 1:  # a stream of its own: the patients of a single-size cohort stay as they were
        sizes = np.random.default_rng([seed, int(pid), 3])
        for s in spec.series.values():
            s.matrix = int(sizes.choice(matrices))
    return spec


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix about x, then y, then z."""
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def place_brain(spec: PatientSpec, rng: np.random.Generator, *, quirks: bool) -> None:
    """Brain anatomy: pose of the template in the head, a tumour in deep white matter, slice counts."""
    from stages.anatomy import atlas

    spec.anatomy = "brain"
    spec.rotation = rotation(rng.uniform(-8.0, 8.0, size=3))
    spec.brain_scale = 0.9 * spec.head_scale
    spec.shift = rng.uniform(-4.0, 4.0, size=3)
    white = atlas().white_matter
    start = white[int(rng.integers(len(white)))]  # any lobe, either hemisphere
    spec.tumour_centre = spec.brain_scale * spec.rotation @ start + spec.shift
    spec.tumour_radius = float(rng.uniform(9.0, 20.0))
    spec.tumour_axes = rng.uniform(0.8, 1.25, size=3)
    if quirks:  # slice counts (and so thicknesses) differ between a patient's series; a few are oblique
        for s in spec.series.values():
            s.slices_factor = float(rng.choice([0.75, 1.0, 1.0, 1.25, 1.5]))
        for s in spec.series.values():
            if rng.random() < OBLIQUE_SHARE:
                s.tilt_deg = tuple(float(a) for a in rng.uniform(-OBLIQUE_MAX_DEG, OBLIQUE_MAX_DEG, size=3))


def tissue_map(spec: PatientSpec, points: np.ndarray) -> np.ndarray:
    """Tissue index (see ``TISSUES``) at each point of ``points`` (..., 3) in mm."""
    head = HEAD_MM * spec.head_scale
    r_head = np.sqrt(np.sum((points / head) ** 2, axis=-1))
    t = np.zeros(points.shape[:-1], dtype=np.int8)
    t[r_head < 1.0] = 1
    t[r_head < 0.96] = 2
    t[r_head < 0.90] = 3
    brain = r_head < 0.90
    for cx in (-9.0, 9.0):
        v = (points - np.array([cx, -5.0, 8.0])) / np.array([5.0, 20.0, 9.0])
        t[np.sum(v**2, axis=-1) < 1.0] = 4
    d = np.sqrt(np.sum((points - spec.tumour_centre) ** 2, axis=-1)) / spec.tumour_radius
    t[brain & (d < spec.oedema_ratio)] = 5
    t[brain & (d < 1.0)] = 6
    t[brain & (d < spec.core_ratio)] = 7
    return t


def lesion_distance(spec: PatientSpec, points: np.ndarray) -> np.ndarray:
    """Distance from the tumour's centre in units of its radius (an ellipsoid for brain anatomy)."""
    offset = points - spec.tumour_centre
    if spec.anatomy == "brain":
        offset = (offset @ spec.rotation) / spec.tumour_axes
    return np.sqrt(np.sum(offset**2, axis=-1)) / spec.tumour_radius


def brain_signal(spec: PatientSpec, series: str, points: np.ndarray) -> np.ndarray:
    """Noise-free intensity of ``series`` with brain anatomy: partial-volume tissue mixture in a
    scalp and skull shell, the lesion (oedema, enhancing rim, necrotic core) within the brain."""
    from stages.anatomy import tissue_probabilities

    v = BRAIN_INTENSITY[series]
    template = ((points - spec.shift) @ spec.rotation) / spec.brain_scale
    probs = tissue_probabilities(template)
    inside = probs.sum(axis=-1)
    r_head = np.sqrt(np.sum((points / (BRAIN_HEAD_MM * spec.head_scale)) ** 2, axis=-1))
    shell = np.select([r_head < 0.90, r_head < 0.96, r_head < 1.0], [v["csf"], v["skull"], v["scalp"]], 0.0)
    img = (1.0 - np.clip(inside, 0, 1)) * shell
    img += probs[..., 0] * v["gm"] + probs[..., 1] * v["wm"] + probs[..., 2] * v["csf"]
    d = lesion_distance(spec, points)
    tissue = (probs[..., 0] + probs[..., 1]) > 0.3
    rim = v["rim"] * (spec.rim_boost if series == "T1wCE" else 1.0)
    for region, value in ((d < spec.oedema_ratio, v["oedema"]), (d < 1.0, rim), (d < spec.core_ratio, v["core"])):
        img = np.where(tissue & region, value, img)
    return img.astype(np.float32)


def render(spec: PatientSpec, series: str, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signal intensity of ``series`` at ``points`` with bias field and noise (float32)."""
    if spec.anatomy == "brain":
        img = brain_signal(spec, series, points)
    else:
        values = np.array(INTENSITY[series], dtype=np.float32)
        if series == "T1wCE":
            values[TISSUES.index("rim")] *= spec.rim_boost
        img = values[tissue_map(spec, points)]
    img *= 1.0 + points @ spec.bias
    img += rng.normal(0.0, 18.0, size=img.shape) * (img > 0)
    return np.clip(img * spec.series[series].scale, 0, None).astype(np.float32)


def slice_grid(
    *, directions: tuple[np.ndarray, np.ndarray], n_slices: int, size: int, head: np.ndarray = HEAD_MM
) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Pixel centres ``(n, size, size, 3)``, the IPP of each slice and the slice gap for a plane of
    ``directions`` (row, column); the stack spans the head (semi-axes ``head``) with a margin."""
    row_dir, col_dir = directions
    normal = np.cross(row_dir, col_dir)
    extent = float(np.abs(normal) @ (head * 1.2))
    offsets = np.linspace(-extent, extent, n_slices)
    spacing = FOV_MM / size
    ij = (np.arange(size) - (size - 1) / 2.0) * spacing
    plane_pts = ij[None, :, None] * row_dir + ij[:, None, None] * col_dir  # [row, col, 3]
    points = offsets[:, None, None, None] * normal + plane_pts[None]
    ipps = [points[k, 0, 0] for k in range(n_slices)]
    gap = float(offsets[1] - offsets[0]) if n_slices > 1 else spacing
    return points, ipps, gap


def dicom_dataset(
    *, spec: PatientSpec, series: str, pixels: np.ndarray, ipp: np.ndarray, number: int, gap: float, seed: int
) -> Dataset:
    """A complete MR image dataset (with obviously fake identities) for one slice."""
    s = spec.series[series]
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), spec.pid, *map(str, parts)])  # noqa: E731
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid(series, number)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid(series)
    ds.Modality = "MR"
    ds.PatientName = f"DEMO^PHANTOM{spec.pid}"
    ds.PatientID = f"DEMO-PID-{spec.pid}"
    ds.PatientBirthDate = "19000101"
    ds.StudyDate = "20000101"
    ds.InstitutionName = "DEMO PHANTOM INSTITUTE"
    ds.SeriesDescription = series
    ds.SeriesNumber = SERIES.index(series) + 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
    ds.ImageOrientationPatient = [round(float(v), 6) for d in s.directions() for v in d]
    ds.PixelSpacing = [FOV_MM / pixels.shape[0], FOV_MM / pixels.shape[1]]
    ds.SliceThickness = round(gap, 4)
    ds.SpacingBetweenSlices = round(gap, 4)
    ds.RescaleSlope = s.slope
    ds.RescaleIntercept = s.intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if s.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    if s.encoding:
        ds.compress(ENCODINGS[s.encoding], generate_instance_uid=False)  # keep the seeded UID
    return ds


def stored_values(image: np.ndarray, s: SeriesSpec) -> np.ndarray:
    """Scanner values -> stored uint16 through RescaleSlope/Intercept and MONOCHROME1."""
    stored = np.clip(np.round((image - s.intercept) / s.slope), 0, 65535)
    if s.monochrome1:
        stored = 65535 - np.clip(stored, 0, 65535)
    return stored.astype(np.uint16)


def write_patient(*, folder: Path, spec: PatientSpec, n_slices: int, size: int, seed: int) -> int:
    """Write the four series of one patient; returns the number of files written."""
    rng = np.random.default_rng([seed, int(spec.pid), 1])
    count = 0
    for series in SERIES:
        s = spec.series[series]
        n = max(4, round(n_slices * s.slices_factor))
        head = BRAIN_HEAD_MM if spec.anatomy == "brain" else HEAD_MM
        points, ipps, gap = slice_grid(directions=s.directions(), n_slices=n, size=s.matrix or size, head=head)
        images = render(spec, series, points, rng)
        series_dir = folder / series
        series_dir.mkdir(parents=True, exist_ok=True)
        order = range(n - 1, -1, -1) if s.descending else range(n)
        for rank, k in enumerate(order):
            number = s.first_number + rank * s.number_step
            ds = dicom_dataset(
                spec=spec,
                series=series,
                pixels=stored_values(images[k], s),
                ipp=ipps[k],
                number=number,
                gap=gap,
                seed=seed,
            )
            ds.save_as(series_dir / f"Image-{number}.dcm", enforce_file_format=True)
            count += 1
    return count


def break_files(*, root: Path, train_ids: list[str], test_ids: list[str]) -> list[str]:
    """Add a few realistic faults to a written cohort; returns a description of each."""
    done = []

    def numbered(series_dir: Path) -> list[Path]:
        return sorted(series_dir.glob("*.dcm"), key=lambda p: int(p.stem.split("-")[1]))

    def first_file(series_dir: Path) -> Path:
        return numbered(series_dir)[0]

    # the organisers' faulty patients: a series whose slices disagree in size, a truncated file
    bad = root / "train" / FAULTY_IDS[0] / "T1wCE"
    victim = first_file(bad)
    ds = pydicom.dcmread(victim)
    small = ds.pixel_array[::2, ::2].astype(np.uint16)
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(victim, enforce_file_format=True)
    done.append(f"{victim.relative_to(root)}: slice of a different size")
    victim = first_file(root / "train" / FAULTY_IDS[1] / "FLAIR")
    victim.write_bytes(victim.read_bytes()[:700])
    done.append(f"{victim.relative_to(root)}: truncated")
    empty = root / "train" / FAULTY_IDS[2] / "T2w"
    for p in sorted(empty.iterdir()):
        p.unlink()
    done.append(f"{empty.relative_to(root)}: empty series folder")
    # ordinary patients: stray non-DICOM files and a DICOM file without pixel data
    if len(train_ids) > 4:
        (root / "train" / train_ids[0] / "T1wCE" / "Thumbs.db").write_bytes(b"\x00\x01thumbnail cache")
        (root / "train" / train_ids[1] / "FLAIR" / "notes.txt").write_text("scanner notes\n")
        # a central T2w slice (so that preprocessing reads it) of the first other patient that has one
        series = next(s for pid in train_ids[2:] if (s := numbered(root / "train" / pid / "T2w")))
        victim = series[len(series) // 2 - 1]
        ds = pydicom.dcmread(victim)
        del ds.PixelData
        ds.save_as(victim, enforce_file_format=True)
        done += [
            f"train/{train_ids[0]}/T1wCE/Thumbs.db: not DICOM",
            f"train/{train_ids[1]}/FLAIR/notes.txt: not DICOM",
            f"{victim.relative_to(root)}: no pixel data",
        ]
    if test_ids:
        victim = first_file(root / "test" / test_ids[0] / "T1w")
        victim.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
        done.append(f"{victim.relative_to(root)}: corrupt")
    return done
