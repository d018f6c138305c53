"""Deterministic CT-like abdominal phantoms with small, irregular, low-contrast tumours.

For CPU smoke training, tests and the book: :func:`make_phantom` draws one volume from a seed,
:func:`write_phantom_dataset` writes a folder in the common layout (:mod:`sam3d.data.layout`).
Arrays are in NIfTI order ``(x, y, z)`` (slice axis last); the affine is ``diag(spacing)``
with origin 0, read as RAS+: the liver sits at high x (patient right), the spine at low y.

Anatomy is defined in mm relative to the physical extent (the same extent looks the same at any
voxel size): air (-1000 HU), a body with subcutaneous fat (-100) over the muscle wall (40),
bowel/visceral fat/gas, a vertebra (cortex 650, cancellous 320, discs, canal, arch), paraspinal
muscles, aorta (180), IVC (110), kidneys (30) in perirenal fat, and a liver-like organ (60 HU,
a tapered ellipsoid deformed by a smooth field, with thin enhancing vessels). Tumours are
irregular blobs (rotated ellipsoid with bumps plus satellite lobes), darker than the organ,
with a soft partial-volume edge; size (absolute mm), contrast and regularity shrink with
``difficulty``. Each keeps >= :data:`MIN_TUMOUR_MM3` of label volume, and its darkened support
dilated by one voxel (26-neighbourhood) lies inside the organ, so label-2 voxels only touch
labels 1 and 2. The anatomy is blurred (CT point spread); correlated Gaussian noise is added.
``default_rng(seed)`` is split into anatomy, tumour and noise streams, so a seed gives the same
anatomy and noise at every difficulty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import layout
from .io import save_nifti

GENERATOR_VERSION = 1
# where a written index's description gives the generator's parameters (as JSON)
_PARAMETERS = "Generator parameters: "
LABELS = {0: "background", 1: "organ", 2: "tumour"}
TARGET = 2
AIR_HU, FAT_HU, MUSCLE_HU, ORGAN_HU = -1000.0, -100.0, 40.0, 60.0
KIDNEY_HU, AORTA_HU, IVC_HU, VESSEL_HU = 30.0, 180.0, 110.0, 120.0
CORTEX_HU, CANCELLOUS_HU, DISC_HU, CANAL_HU = 650.0, 320.0, 90.0, 15.0
MIN_TUMOUR_MM3 = 30.0
SMALL_RADIUS_MM = 3.0  # nominal tumour radius at difficulty 1
CONTRAST_HU = (55.0, 10.0)  # nominal tumour contrast at difficulty 0 and 1
MAX_TUMOURS = 10


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate.

    ``shape``: voxels along (x, y, z), at least 16 each; ``spacing``: voxel size in mm along
    (x, y, z); ``difficulty`` in [0, 1] (0: large, round, high-contrast tumours; 1: radius
    ~3 mm, irregular, ~10 HU below the organ); ``n_tumours``: a fixed count or an inclusive
    ``(low, high)`` range drawn per case (0 to :data:`MAX_TUMOURS`); ``noise_hu``: standard
    deviation of the image noise in HU.
    """

    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    difficulty: float = 0.5
    n_tumours: int | tuple[int, int] = (1, 3)
    noise_hu: float = 12.0

    def __post_init__(self):
        shape, spacing = self.shape, self.spacing
        if not isinstance(shape, (tuple, list)) or len(shape) != 3 or not all(map(_is_int, shape)):
            raise ValueError(f"shape must be three integers (x, y, z), got {shape!r}")
        if min(shape) < 16:
            raise ValueError(f"shape needs at least 16 voxels per axis, got {tuple(shape)}")
        if (not isinstance(spacing, (tuple, list)) or len(spacing) != 3
                or not all(_is_real(s) and math.isfinite(s) and s > 0 for s in spacing)):
            raise ValueError(f"spacing must be three positive finite mm values, got {spacing!r}")
        if not (_is_real(self.difficulty) and 0.0 <= self.difficulty <= 1.0):
            raise ValueError(f"difficulty must be a number in [0, 1], got {self.difficulty!r}")
        n = self.n_tumours
        rng_ok = (isinstance(n, (tuple, list)) and len(n) == 2 and all(map(_is_int, n))
                  and 0 <= n[0] <= n[1] <= MAX_TUMOURS)
        if not (rng_ok or (_is_int(n) and 0 <= n <= MAX_TUMOURS)):
            raise ValueError(f"n_tumours must be an int or an inclusive (low, high) pair within "
                             f"0..{MAX_TUMOURS}, got {n!r}")
        if not (_is_real(self.noise_hu) and math.isfinite(self.noise_hu) and self.noise_hu >= 0):
            raise ValueError(f"noise_hu must be a finite number >= 0, got {self.noise_hu!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))
        object.__setattr__(self, "difficulty", float(self.difficulty))
        object.__setattr__(self, "noise_hu", float(self.noise_hu))
        object.__setattr__(self, "n_tumours", int(n) if _is_int(n) else (int(n[0]), int(n[1])))

    @property
    def tumour_range(self) -> tuple[int, int]:
        n = self.n_tumours
        return (n, n) if isinstance(n, int) else n

    def params(self) -> dict:
        """JSON-ready fields (stored in a dataset's description to detect stale folders)."""
        return {"shape": list(self.shape), "spacing": list(self.spacing),
                "difficulty": self.difficulty, "n_tumours": list(self.tumour_range),
                "noise_hu": self.noise_hu}


@dataclass(frozen=True, eq=False)
class Phantom:
    """One generated case.

    ``image``: float32 HU, shape ``spec.shape`` (x, y, z); ``label``: uint8, same shape
    (0 background, 1 organ, 2 tumour); ``affine``: 4x4 float64, ``diag(spacing) + [0, 0, 0, 1]``;
    ``tumours``: one dict per tumour with ``centre`` (voxel indices x, y, z), ``radius_mm``
    (nominal), ``contrast_hu`` (darker than the organ by), ``voxels`` (label-2 count) and
    ``lobes`` (satellite count).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    tumours: list[dict]
    spec: PhantomSpec


def _smooth_field(rng: np.random.Generator, coords: list[np.ndarray], scale_mm: float):
    """Unit-variance smooth random field, shape ``(len(cx), len(cy), len(cz))``, float32.

    A sum of Gaussian bumps (width ``scale_mm``) on a lattice of pitch ``scale_mm`` centred on
    the volume; the lattice depends on the physical extent only, not on the voxel size.
    """
    weights = []
    for c in coords:
        extent = float(c[-1] - c[0]) if len(c) > 1 else 0.0
        m = math.ceil(extent / scale_mm) + 5
        nodes = (np.arange(m) - (m - 1) / 2) * scale_mm
        w = np.exp(-0.5 * ((c[:, None] - nodes[None]) / scale_mm) ** 2)
        weights.append((w / np.sqrt((w ** 2).sum(1, keepdims=True))).astype(np.float32))
    g = rng.standard_normal(tuple(w.shape[1] for w in weights), dtype=np.float32)
    f = np.einsum("kc,abc->abk", weights[2], g)
    f = np.einsum("jb,abk->ajk", weights[1], f)
    return np.einsum("ia,ajk->ijk", weights[0], f)


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0, level=False):
    """Mask of a rotated ellipse (broadcast over ``x``, ``y`` in mm), or its ``level`` (r²)."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    r2 = (u / ax) ** 2 + (v / ay) ** 2
    return r2 if level else r2 < 1.0


def _anatomy(rng: np.random.Generator, spec: PhantomSpec):
    """Noiseless HU volume (float32, x·y·z) and the organ mask (bool, x·y·z)."""
    coords = [(np.arange(n) - (n - 1) / 2) * s
              for n, s in zip(spec.shape, spec.spacing, strict=True)]
    ext = [n * s for n, s in zip(spec.shape, spec.spacing, strict=True)]
    x, y, z = (c.astype(np.float32) for c in coords)  # mm; float32 keeps the volume ops cheap
    x, y = x[:, None], y[None, :]  # (nx, 1), (1, ny); z: (nz,)
    u = rng.uniform(-1, 1, 40).tolist()  # fixed count: anatomy independent of other settings
    # body: ellipse with angular harmonics, slowly varying along z
    ba, bb = 0.46 * ext[0] * (1 + 0.04 * u[0]), 0.37 * ext[1] * (1 + 0.04 * u[1])
    bx, by = 0.02 * ext[0] * u[2], 0.03 * ext[1] + 0.02 * ext[1] * u[3]
    r_mean = math.sqrt(ba * bb)
    theta = np.arctan2((y - by) / bb, (x - bx) / ba)
    rho = np.hypot((x - bx) / ba, (y - by) / bb)
    for k in range(3):
        rho = rho / (1 + 0.02 * (1 + u[4 + k]) * np.cos((k + 2) * theta + math.pi * u[7 + k]))
    zmod = 1 + 0.03 * np.sin(2 * math.pi * z / (ext[2] * (2.5 + u[10])) + math.pi * u[11])
    q = rho[:, :, None] / zmod  # normalised body radius, 1 at the skin
    fat = 0.09 + 0.025 * u[12] - 0.03 * np.sin(theta)[:, :, None]  # thicker posteriorly
    wall = 1 - fat
    cavity = wall - 0.06
    img = np.full(spec.shape, AIR_HU, np.float32)
    img[q < 1] = FAT_HU
    img[q < wall] = MUSCLE_HU
    inside = q < cavity
    vis = _smooth_field(rng, coords, 0.12 * r_mean)
    bowel = np.where(vis > 0.6, -90.0 + 10 * vis, 25.0 + 12 * vis)
    bowel[vis < -2.2] = -950.0  # gas pockets
    img[inside] = bowel[inside]
    # spine (in-plane shapes, discs along z) and paraspinal muscles
    rv = 0.14 * r_mean
    vx, vy = bx + 0.03 * rv * u[13], by - bb + 0.27 * bb + rv * (1 + 0.1 * u[14])
    para = (_ellipse(x, y, vx - 1.6 * rv, vy - 1.9 * rv, 1.0 * rv, 0.8 * rv, 0.3)
            | _ellipse(x, y, vx + 1.6 * rv, vy - 1.9 * rv, 1.0 * rv, 0.8 * rv, -0.3))
    img[para[:, :, None] & (q < 1)] = MUSCLE_HU + 10
    rc = 0.45 * rv
    cy = vy - rv - 0.6 * rc
    arch = _ellipse(x, y, vx, cy, rc * 1.5, rc * 1.4) | _ellipse(
        x, y, vx, cy - rc - 0.5 * rv, 0.22 * rv, 0.6 * rv)
    canal = _ellipse(x, y, vx, cy, rc, rc * 0.9)
    vb = _ellipse(x, y, vx, vy, rv, rv * 0.9)
    cancellous = _ellipse(x, y, vx, vy, 0.8 * rv, 0.72 * rv)
    period = 0.55 * r_mean * (1 + 0.1 * u[15])
    disc = np.mod(z / period + u[16], 1.0) < 0.22  # (nz,)
    img[arch & ~canal] = 500.0
    img[canal] = CANAL_HU
    img[vb] = CORTEX_HU
    img[cancellous] = CANCELLOUS_HU
    img[vb[:, :, None] & disc] = DISC_HU
    # vessels along z; kidneys in a perirenal fat capsule
    ra = 0.075 * r_mean * (1 + 0.1 * u[18])
    aorta = _ellipse(x, y, vx - 0.6 * rv + 0.1 * rv * u[17], vy + rv + 1.2 * ra, ra, ra)
    ivc = _ellipse(x, y, vx + 1.5 * rv, vy + rv + 0.9 * ra, 1.2 * ra, 0.8 * ra, 0.2 * u[19])
    img[aorta] = AORTA_HU
    img[ivc] = IVC_HU
    kidneys = np.zeros(spec.shape, bool)
    for side, i in ((-1, 20), (1, 23)):  # patient left (-x), right (+x, lower)
        kx, ky = vx + side * 2.3 * rv, vy + 0.1 * rv + 0.2 * rv * u[i]
        kz = -0.05 * ext[2] * side + 0.1 * ext[2] * u[i + 1]
        ang, kax, kay = side * (0.5 + 0.15 * u[i + 2]), 0.14 * r_mean, 0.09 * r_mean
        zz = ((z - kz) / (0.3 * ext[2] + 0.05 * r_mean)) ** 2
        r2 = _ellipse(x, y, kx, ky, kax, kay, ang, level=True)[:, :, None] + zz
        img[(r2 < 1.8) & inside] = FAT_HU + 20  # perirenal fat
        kidneys |= r2 < 1
    img[kidneys & inside] = KIDNEY_HU
    # liver: tapered ellipsoid (narrower medially) deformed by a smooth field
    lx, ly = bx + 0.4 * ba + 0.04 * ba * u[26], by + 0.12 * bb + 0.04 * bb * u[27]
    lz = 0.08 * ext[2] + 0.05 * ext[2] * u[28]
    ax, ay = 0.46 * ba * (1 + 0.06 * u[29]), 0.6 * bb * (1 + 0.06 * u[30])
    az = 0.42 * ext[2] * (1 + 0.06 * u[31])
    dx = (x - lx) / ax
    taper = 0.78 + 0.22 * np.clip(dx, -1, 1)
    r2 = dx ** 2 + ((y - ly) / (ay * taper)) ** 2  # (nx, ny)
    deform = _smooth_field(rng, coords, 0.3 * r_mean)
    lr = r2[:, :, None] + ((z - lz) / az)[None, None, :] ** 2
    blocked = kidneys | (aorta | ivc | vb | arch | para)[:, :, None]
    organ = (lr < (1 + 0.14 * deform) ** 2) & (q < cavity - 0.02) & ~blocked
    img[organ] = ORGAN_HU + 3.0 * u[32] + 3.0 * deform[organ]
    # hepatic vessels (painted after the tumours, which displace them): tubes where two
    # independent smooth fields both cross zero
    vessels = organ & (np.abs(deform) < 0.15) & (np.abs(vis) < 0.3)
    return img, organ, vessels


def _tumour_shape(rng: np.random.Generator, radius: float, d: float, spacing):
    """Signed distance (mm, <0 inside) of one tumour on a box of voxel offsets, shape (a, b, c).

    The box is centred on the tumour's centre voxel; its half-size is a bound of the shape.
    """
    axes = radius * np.exp(rng.uniform(-1, 1, 3) * (0.06 + 0.22 * d))
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    dirs = rng.standard_normal((6, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bumps = rng.uniform(-1, 1, 6) * (0.04 + 0.2 * d)
    n_sat = int(rng.integers(0, 1 + round(3 * d)))
    sat_dir = rng.standard_normal((n_sat, 3))
    sat_dir /= np.linalg.norm(sat_dir, axis=1, keepdims=True)
    sat_c = sat_dir * (rng.uniform(0.6, 0.95, (n_sat, 1)) * radius)
    sat_r = rng.uniform(0.4, 0.65, n_sat) * radius
    bound = max(axes.max() * (1 + np.abs(bumps).sum()),
                max((np.linalg.norm(sat_c, axis=1) + sat_r).tolist(), default=0.0)) + 3.0
    half = [math.ceil(bound / s) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)],
                        indexing="ij")
    off = np.stack(grids, -1)  # (a, b, c, 3) mm
    dist = np.linalg.norm(off, axis=-1)
    unit = off / np.maximum(dist, 1e-6)[..., None]
    rho = np.linalg.norm((off @ rot) / axes, axis=-1)
    mod = 1 + (np.exp(3.0 * (unit @ dirs.T - 1.0)) * bumps).sum(-1)
    sd = (rho - mod) * float(np.exp(np.log(axes).mean()))
    for c, r in zip(sat_c, sat_r, strict=True):
        sd = np.minimum(sd, np.linalg.norm(off - c, axis=-1) - r)
    return sd, dist, n_sat


def _place_tumours(rng, spec: PhantomSpec, img: np.ndarray, organ: np.ndarray, label):
    """Draw tumours, place them inside ``organ`` (bool, x·y·z) and paint them.

    ``img`` (float32) and ``label`` (uint8) are changed in place. Returns the per-tumour dicts
    and the union of their supports dilated by one voxel (bool, x·y·z).
    """
    d, sp = spec.difficulty, np.asarray(spec.spacing)
    lo, hi = spec.tumour_range
    count = int(rng.integers(lo, hi + 1))
    zone = np.zeros(spec.shape, bool)
    if count == 0:
        return [], zone
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(organ))
    voxel_mm3 = float(np.prod(sp))
    # depth (mm) of each free voxel: distance to the nearest non-free voxel or the volume edge
    edt = ndimage.distance_transform_edt(np.pad(organ[box], 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    pos = np.ogrid[tuple(slice(0, n) for n in edt.shape)]
    # large tumours scale with the organ (its deepest point), small ones are absolute
    r_large = float(np.clip(0.5 * edt.max(), SMALL_RADIUS_MM, 12.0))
    origin = np.array([s.start for s in box])
    out = []
    for _ in range(count):
        radius = (r_large + (SMALL_RADIUS_MM - r_large) * d) * rng.uniform(0.85, 1.15)
        c0, c1 = CONTRAST_HU
        contrast = (c0 + (c1 - c0) * d) * rng.uniform(0.85, 1.15)
        width = 1.0 + 1.0 * d  # soft-edge (partial volume) width in mm
        for _attempt in range(20):
            sd, dist, n_sat = _tumour_shape(rng, radius, d, sp)
            inside = sd <= 0
            vol = np.count_nonzero(inside) * voxel_mm3
            if vol < MIN_TUMOUR_MM3:
                radius *= 1.15
                continue
            support = ndimage.binary_dilation(sd < 0.5 * width, np.ones((3, 3, 3), bool))
            need = float(dist[support].max())  # the dilated support lies within this depth
            cand = np.flatnonzero(edt > need)
            if cand.size:
                break
            radius = max(radius * 0.85, SMALL_RADIUS_MM * 0.8)
        else:
            if not out:
                ext = "x".join(f"{n * v:g}" for n, v in zip(spec.shape, spec.spacing, strict=True))
                raise ValueError(f"organ too small to hold a tumour in a {ext} mm volume ({spec})"
                                 "; use a larger physical extent (shape x spacing)")
            break
        centre = origin + np.array(np.unravel_index(cand[rng.integers(cand.size)], edt.shape))
        half = (np.array(sd.shape) - 1) // 2
        dst, src = [], []
        for c, h, n in zip(centre, half, spec.shape, strict=True):
            a, b = c - h, c + h + 1
            dst.append(slice(max(a, 0), min(b, n)))
            src.append(slice(max(a, 0) - a, 2 * h + 1 - (b - min(b, n))))
        dst, src = tuple(dst), tuple(src)
        frac = np.clip(0.5 - sd[src] / width, 0.0, 1.0)
        img[dst] -= (contrast * frac).astype(np.float32)
        label[dst][inside[src]] = TARGET
        zone[dst] |= support[src]
        # later tumours keep their dilated support clear of this one's (a lower bound of depth)
        rel = [(p - (c - o)) * s for p, c, o, s in zip(pos, centre, origin, sp, strict=True)]
        edt = np.minimum(edt, np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) - need)
        out.append({"centre": [int(c) for c in centre], "radius_mm": round(float(radius), 3),
                    "contrast_hu": round(float(contrast), 3), "lobes": n_sat,
                    "voxels": int(np.count_nonzero(inside[src]))})
    return out, zone


def make_phantom(spec: PhantomSpec, seed: int) -> Phantom:
    """Generate one phantom; the same ``(spec, seed)`` gives bit-identical arrays.

    Returns a :class:`Phantom` whose ``image``/``label`` have shape ``spec.shape`` (x, y, z).
    """
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec must be a PhantomSpec, got {type(spec).__name__}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    anat_rng, tum_rng, noise_rng = np.random.default_rng(int(seed)).spawn(3)
    img, organ, vessels = _anatomy(anat_rng, spec)
    label = organ.astype(np.uint8)
    tumours, zone = _place_tumours(tum_rng, spec, img, organ, label)
    img[vessels & ~zone] = VESSEL_HU
    sp = np.asarray(spec.spacing)
    sigma = np.maximum(0.6, 0.4 * sp) / sp  # CT blur: ~0.6 mm, wider across thick slices
    img = ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=3.0)
    if spec.noise_hu > 0:
        noise = noise_rng.standard_normal(spec.shape, dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, (0.6 / sp[0], 0.6 / sp[1], 0), truncate=3.0)
        img += noise * np.float32(spec.noise_hu / float(noise.std()))
    affine = np.diag([*spec.spacing, 1.0]).astype(np.float64)
    img = np.clip(img, -1024.0, 3071.0, out=img)  # the range a CT scanner stores
    return Phantom(image=img.astype(np.float32), label=label, affine=affine,
                   spacing=spec.spacing, seed=int(seed), tumours=tumours, spec=spec)


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset drawn with ``seed`` (a SeedSequence hash)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)
    return int(state[0])


def write_phantom_dataset(root: str | Path, n_cases: int, seed: int = 0,
                          spec: PhantomSpec = PhantomSpec(), prefix: str = "phantom",
                          replace: bool = True) -> Path:
    """Write ``n_cases`` phantoms to ``root`` in the common layout; returns ``root``.

    Case ``i`` is ``<prefix>_<i:03d>``, drawn with :func:`case_seed` ``(seed, i)``; images are
    int16 HU, labels uint8, both with the phantom's affine. Nothing is written when ``root``
    already holds an index with the same generator parameters and all its files.
    ``replace=False`` (the Trainer's): raise :class:`FileExistsError` instead of writing over
    a dataset of other parameters, or over any other dataset (an older generator version of
    the same parameters is still replaced).
    """
    if not _is_int(n_cases) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec must be a PhantomSpec, got {type(spec).__name__}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    ids = [f"{prefix}_{i:03d}" for i in range(n_cases)]
    try:
        layout.check_case_ids(ids[:1])
    except layout.LayoutError as exc:
        raise ValueError(f"prefix {prefix!r} does not make a valid case id ({exc})") from None
    root = Path(root)
    params = {"generator": "sam3d.data.phantoms", "version": GENERATOR_VERSION,
              "seed": int(seed), "n_cases": int(n_cases), "prefix": prefix, "spec": spec.params()}
    description = ("Synthetic CT-like abdominal phantoms (liver-like organ with small irregular "
                   "low-contrast tumours). " + _PARAMETERS + json.dumps(params, sort_keys=True))
    if layout.up_to_date(root, description, ids):
        return root
    if not replace and (held := _other_dataset(root, params)):
        raise FileExistsError(f"{root} holds another dataset ({held}); it is not written over")
    cases = {}
    for i, case_id in enumerate(ids):
        ph = make_phantom(spec, case_seed(seed, i))
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        hu = np.clip(np.rint(ph.image), -1024, 3071).astype(np.int16)
        save_nifti(folder / "image.nii.gz", hu, ph.affine)
        save_nifti(folder / "label.nii.gz", ph.label, ph.affine)
        note = f"seed={ph.seed} difficulty={spec.difficulty:g} tumours={len(ph.tumours)}"
        cases[case_id] = layout.case_record(case_id, hu, ph.spacing, ph.label, TARGET, note=note)
    layout.write_index(root, name="phantoms", labels=LABELS, target=TARGET, cases=cases,
                       source="sam3d.data.phantoms (synthetic)", description=description)
    return root


def _other_dataset(root: Path, params: dict) -> str | None:
    """What ``root`` holds if it is a dataset other than the phantoms of ``params`` (any
    generator version), else None (nothing there, or those phantoms, perhaps incomplete)."""
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        held = json.loads(str(doc["description"]).split(_PARAMETERS, 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "a dataset.json not written by this generator"
    if not isinstance(held, dict):
        return "a dataset.json not written by this generator"
    diff = {k: held.get(k) for k in params.keys() | held.keys()
            if k != "version" and held.get(k) != params.get(k)}
    return "phantoms of other parameters: " + json.dumps(diff, sort_keys=True) if diff else None
