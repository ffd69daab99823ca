"""Every Warp kernel of the built-in engine, in one module so its hash (and kernel cache) is stable.

One propagation kernel serves both geometries (``mode`` 0: analytic vessel with PMT patches,
1: a scene of instanced triangle meshes under a top-level BVH of instance bounds), so a worker
compiles once. The physics follows Chroma's propagation loop with Geant4's meaning of materials and
surfaces: find the next boundary; in the material the photon is in, sample absorption and Rayleigh
distances; absorb (maybe re-emit), scatter, or move to the boundary at the group velocity; at a
boundary, kill the photon where a side has no refractive index (Geant4's NoRINDEX), let it pass
where a dielectric boundary separates equal materials, else apply the optical surface (detect /
absorb / reflect diffusely / reflect specularly / transmit by its wavelength tables; the
remainder is Fresnel, or absorption on a metal), or Fresnel reflect or refract with
polarisation. Random numbers come from ``wp.rand_init(event_seed, photon_index)``, so a photon's
history does not depend on how the work is split. Every loop is bounded. Importing this module
defines the kernels; nothing is compiled until the first launch.
"""

# mypy: ignore-errors
# ruff: noqa: UP018, RUF046, SIM102, SIM108, RUF059
# Warp kernels are a typed DSL compiled by Warp: int(0) / float(0.0) declare loop-carried dynamic
# variables, and there are no conditional expressions; mypy's view of Warp's stubs does not apply.

from __future__ import annotations

from typing import Any

import warp as wp

from charon.engine.optics import SPEED_OF_LIGHT_MM_PER_NS
from charon.protocol.tokens import TERMINAL_FLAGS, Flag

# Forward-only kernels: no adjoint code, half the compile time.
wp.set_module_options({"enable_backward": False})

C_MM_PER_NS = wp.constant(SPEED_OF_LIGHT_MM_PER_NS)
TWO_PI = wp.constant(6.283185307179586)

F_NO_HIT = wp.constant(wp.uint32(Flag.NO_HIT))
F_BULK_ABSORB = wp.constant(wp.uint32(Flag.BULK_ABSORB))
F_SURFACE_DETECT = wp.constant(wp.uint32(Flag.SURFACE_DETECT))
F_SURFACE_ABSORB = wp.constant(wp.uint32(Flag.SURFACE_ABSORB))
F_RAYLEIGH_SCATTER = wp.constant(wp.uint32(Flag.RAYLEIGH_SCATTER))
F_REFLECT_DIFFUSE = wp.constant(wp.uint32(Flag.REFLECT_DIFFUSE))
F_REFLECT_SPECULAR = wp.constant(wp.uint32(Flag.REFLECT_SPECULAR))
F_BULK_REEMIT = wp.constant(wp.uint32(Flag.BULK_REEMIT))
F_NAN_ABORT = wp.constant(wp.uint32(Flag.NAN_ABORT))
F_TERMINAL = wp.constant(wp.uint32(TERMINAL_FLAGS))

#: Rejection-sampling tries of one Rayleigh scatter before the bounded fallback.
RAYLEIGH_TRIES = wp.constant(64)

#: Draws of a red-shift-only (wavelength-shifting) re-emission before the photon is lost.
REEMIT_TRIES = wp.constant(100)

MODE_ANALYTIC = wp.constant(0)
MODE_SCENE = wp.constant(1)
#: Surface models (``charon.engine.detector.SURFACE_MODELS`` order).
MODEL_CHROMA = wp.constant(0)
MODEL_DIELECTRIC = wp.constant(1)
MODEL_METAL = wp.constant(2)
SHAPE_SPHERE = wp.constant(0)
SHAPE_CYLINDER = wp.constant(1)


@wp.struct
class Optics:
    """Material and surface tables on one uniform wavelength grid (rows = material/surface index)."""

    wl0: float
    inv_dwl: float
    nwl: int
    rindex: wp.array2d(dtype=float)
    groupvel: wp.array2d(dtype=float)  # mm/ns
    opaque: wp.array(dtype=int)  # 1: no refractive index (photons die at its boundaries)
    abslen: wp.array2d(dtype=float)
    scatlen: wp.array2d(dtype=float)
    reemit_prob: wp.array2d(dtype=float)
    reemit_icdf: wp.array2d(dtype=float)  # wavelength at cumulative probability j / (ncdf - 1)
    reemit_tau: wp.array(dtype=float)
    reemit_delta: wp.array(dtype=int)  # 1: fixed delay tau, 0: exponential
    reemit_red: wp.array(dtype=int)  # 1: re-emitted wavelength never shorter (WLS)
    s_detect: wp.array2d(dtype=float)
    s_absorb: wp.array2d(dtype=float)
    s_rdiff: wp.array2d(dtype=float)
    s_rspec: wp.array2d(dtype=float)
    s_trans: wp.array2d(dtype=float)
    s_model: wp.array(dtype=int)


@wp.struct
class Analytic:
    """A sphere or z-cylinder vessel about the origin; PMT photocathodes are patches of its wall.

    A wall point is on PMT k's photocathode when its distance from the PMT axis is <= radius and
    its depth along the axis is <= max_depth; candidates come from a (cos theta, phi) cell table
    (``charon.engine.detector.PMTLookup``), so the lookup is exact and cheap.
    """

    shape: int
    radius: float
    half_height: float
    mat_in: int
    mat_out: int
    wall_surface: int
    pmt_surface: int
    pmt_pos: wp.array(dtype=wp.vec3)
    pmt_nrm: wp.array(dtype=wp.vec3)
    pmt_r2: float
    max_depth: float
    n_u: int
    n_phi: int
    candidates: wp.array2d(dtype=int)


@wp.struct
class SceneGeo:
    """Instanced meshes: a BVH over instance world bounds, one ``wp.Mesh`` per shape (own frame),
    and per instance its transform (x_world = lin @ x + offset, ``inv`` = lin^-1), materials,
    exit/enter surfaces and channel."""

    top: wp.uint64
    meshes: wp.array(dtype=wp.uint64)
    shape: wp.array(dtype=int)
    lin: wp.array(dtype=wp.mat33)
    inv: wp.array(dtype=wp.mat33)
    offset: wp.array(dtype=wp.vec3)
    mat_in: wp.array(dtype=int)
    mat_out: wp.array(dtype=int)
    surf_exit: wp.array(dtype=int)
    surf_enter: wp.array(dtype=int)
    channel: wp.array(dtype=int)
    tag_row: wp.array(dtype=int)  # per shape: first row of its per-triangle tags, -1: instance tags
    tri_tags: wp.array2d(dtype=int)  # mat_in, mat_out, surface, channel per triangle of tagged shapes
    kind: wp.array(dtype=int)  # per shape: 0 mesh, else an analytic kind (charon.engine.detector.scene)
    par: wp.array2d(dtype=float)  # per shape: the analytic kind's parameters


@wp.struct
class PhotonsIn:
    x: wp.array(dtype=float)
    y: wp.array(dtype=float)
    z: wp.array(dtype=float)
    dx: wp.array(dtype=float)
    dy: wp.array(dtype=float)
    dz: wp.array(dtype=float)
    px: wp.array(dtype=float)
    py: wp.array(dtype=float)
    pz: wp.array(dtype=float)
    wl: wp.array(dtype=float)
    t: wp.array(dtype=float)
    flags: wp.array(dtype=wp.uint32)
    ev: wp.array(dtype=int)  # event of each photon within the pass


@wp.struct
class Events:
    """The events of one pass: the seed of each one's streams and its first photon's row."""

    seed: wp.array(dtype=int)
    start: wp.array(dtype=int)


@wp.struct
class PhotonsOut:
    """Final state (hit arrays in v1 SIM_COMPLETE order) plus position, steps and hit mask."""

    channel: wp.array(dtype=int)
    dx: wp.array(dtype=float)
    dy: wp.array(dtype=float)
    dz: wp.array(dtype=float)
    px: wp.array(dtype=float)
    py: wp.array(dtype=float)
    pz: wp.array(dtype=float)
    wl: wp.array(dtype=float)
    t: wp.array(dtype=float)
    flags: wp.array(dtype=wp.uint32)
    x: wp.array(dtype=float)
    y: wp.array(dtype=float)
    z: wp.array(dtype=float)
    steps: wp.array(dtype=int)
    is_hit: wp.array(dtype=int)
    row: wp.array(dtype=int)  # compacted hits only: the photon's row within the chunk


# ------------------------------------------------------------------------------------------
# Helpers


@wp.func
def wl_cell(wl: float, wl0: float, inv_dwl: float, n: int) -> tuple[int, float]:
    """Grid cell and weight of wavelength ``wl`` (clamped to the table): shared by every table."""
    f = wp.clamp((wl - wl0) * inv_dwl, 0.0, float(n - 1))
    i = wp.min(int(f), n - 2)
    return i, f - float(i)


@wp.func
def lerp_row(tab: wp.array2d(dtype=float), row: int, i: int, w: float) -> float:
    return tab[row, i] * (1.0 - w) + tab[row, i + 1] * w


@wp.func
def uniform_open(state: wp.uint32) -> tuple[float, wp.uint32]:
    """Uniform in (0, 1]: safe under ``log``."""
    s = state
    u = 1.0 - wp.randf(s)
    return u, s


@wp.func
def isotropic(state: wp.uint32) -> tuple[wp.vec3, wp.uint32]:
    s = state
    c = 2.0 * wp.randf(s) - 1.0
    phi = TWO_PI * wp.randf(s)
    r = wp.sqrt(wp.max(0.0, 1.0 - c * c))
    return wp.vec3(r * wp.cos(phi), r * wp.sin(phi), c), s


@wp.func
def any_perpendicular(d: wp.vec3) -> wp.vec3:
    a = wp.vec3(1.0, 0.0, 0.0)
    if wp.abs(d[0]) > 0.9:
        a = wp.vec3(0.0, 1.0, 0.0)
    return wp.normalize(wp.cross(d, a))


@wp.func
def random_perpendicular(d: wp.vec3, state: wp.uint32) -> tuple[wp.vec3, wp.uint32]:
    s = state
    e1 = any_perpendicular(d)
    e2 = wp.cross(d, e1)
    phi = TWO_PI * wp.randf(s)
    return wp.cos(phi) * e1 + wp.sin(phi) * e2, s


@wp.func
def lambertian(n: wp.vec3, state: wp.uint32) -> tuple[wp.vec3, wp.uint32]:
    """Cosine-weighted direction in the hemisphere of unit normal ``n``."""
    s = state
    e1 = any_perpendicular(n)
    e2 = wp.cross(n, e1)
    r2 = wp.randf(s)
    phi = TWO_PI * wp.randf(s)
    r = wp.sqrt(r2)
    return wp.normalize(r * wp.cos(phi) * e1 + r * wp.sin(phi) * e2 + wp.sqrt(1.0 - r2) * n), s


@wp.func
def scaled_unit(v: wp.vec3) -> tuple[wp.vec3, int]:
    """``v / |v|`` without overflow or underflow (divided by its largest component first), and 1;
    the zero vector and 0 when ``v`` is zero or not finite."""
    m = wp.max(wp.max(wp.abs(v[0]), wp.abs(v[1])), wp.abs(v[2]))
    if m > 0.0 and m <= 3.4028234663852886e38:
        w = wp.vec3(v[0] / m, v[1] / m, v[2] / m)
        return w / wp.length(w), 1
    return wp.vec3(0.0), 0


@wp.func
def transverse(d: wp.vec3, pol: wp.vec3, state: wp.uint32) -> tuple[wp.vec3, wp.uint32]:
    """``pol``'s part perpendicular to unit ``d``, made unit; a random transverse polarisation where
    that is undefined (zero, parallel to ``d``), as Geant4 does for a null polarisation."""
    s = state
    e, ok = scaled_unit(pol)
    if ok == 1:
        pp = e - wp.dot(e, d) * d
        lpp = wp.length(pp)
        if lpp > 1.0e-6:
            return pp / lpp, s
    e, s = random_perpendicular(d, s)
    return e, s


@wp.func
def rayleigh(d: wp.vec3, pol: wp.vec3, state: wp.uint32) -> tuple[wp.vec3, wp.vec3, wp.uint32]:
    """Dipole scattering: new direction with density ~ 1 - (k'.e)^2, new polarisation e's part normal to k'.

    Averaged over polarisations this is the (1 + cos^2 theta) law about the old direction. The
    rejection loop accepts 2/3 of its tries; it is bounded (all RAYLEIGH_TRIES fail with
    probability 3^-64), and after that the photon leaves in a random direction with a random
    transverse polarisation, so no input can keep it here.
    """
    s = state
    k = d
    e = pol
    accepted = int(0)
    tries = int(0)
    while accepted == 0 and tries < RAYLEIGH_TRIES:
        tries += 1
        k, s = isotropic(s)
        c = wp.dot(k, pol)
        if wp.randf(s) < 1.0 - c * c:
            e = pol - c * k
            ln = wp.length(e)
            if ln > 1.0e-6:
                e = e / ln
                accepted = 1
    if accepted == 0:
        k, s = isotropic(s)
        e, s = random_perpendicular(k, s)
    return k, e, s


# ------------------------------------------------------------------------------------------
# Geometry queries: next boundary along the ray


@wp.func
def analytic_interval(g: Analytic, p: wp.vec3, d: wp.vec3) -> tuple[float, float, wp.vec3, wp.vec3, int]:
    """Entry/exit distances of the line p + t d through the vessel, outward normals there, ok flag."""
    ta = float(-1.0e30)
    tb = float(1.0e30)
    na = wp.vec3(0.0)
    nb = wp.vec3(0.0)
    ok = int(1)
    if g.shape == SHAPE_SPHERE:
        b = wp.dot(p, d)
        c = wp.dot(p, p) - g.radius * g.radius
        disc = b * b - c
        if disc < 0.0:
            ok = 0
        else:
            sq = wp.sqrt(disc)
            ta = -b - sq
            tb = -b + sq
            na = wp.normalize(p + ta * d)
            nb = wp.normalize(p + tb * d)
    else:
        a = d[0] * d[0] + d[1] * d[1]
        b = p[0] * d[0] + p[1] * d[1]
        c = p[0] * p[0] + p[1] * p[1] - g.radius * g.radius
        if a > 1.0e-12:
            disc = b * b - a * c
            if disc < 0.0:
                ok = 0
            else:
                sq = wp.sqrt(disc)
                ta = (-b - sq) / a
                tb = (-b + sq) / a
                qa = p + ta * d
                qb = p + tb * d
                na = wp.normalize(wp.vec3(qa[0], qa[1], 0.0))
                nb = wp.normalize(wp.vec3(qb[0], qb[1], 0.0))
        elif c > 0.0:
            ok = 0
        if ok == 1:
            if wp.abs(d[2]) > 1.0e-12:
                t1 = (-g.half_height - p[2]) / d[2]
                t2 = (g.half_height - p[2]) / d[2]
                n1 = wp.vec3(0.0, 0.0, -1.0)
                n2 = wp.vec3(0.0, 0.0, 1.0)
                if t1 > t2:
                    tmp = t1
                    t1 = t2
                    t2 = tmp
                    n1 = wp.vec3(0.0, 0.0, 1.0)
                    n2 = wp.vec3(0.0, 0.0, -1.0)
                if t1 > ta:
                    ta = t1
                    na = n1
                if t2 < tb:
                    tb = t2
                    nb = n2
            elif wp.abs(p[2]) > g.half_height:
                ok = 0
        if ta >= tb:
            ok = 0
    return ta, tb, na, nb, ok


@wp.func
def analytic_inside(g: Analytic, p: wp.vec3) -> int:
    """1 if ``p`` is inside the vessel or on its wall (within 1e-6 of the radius)."""
    tol = 1.0e-6 * g.radius
    if g.shape == SHAPE_SPHERE:
        if wp.length(p) - g.radius <= tol:
            return 1
        return 0
    rho = wp.sqrt(p[0] * p[0] + p[1] * p[1])
    if wp.max(rho - g.radius, wp.abs(p[2]) - g.half_height) <= tol:
        return 1
    return 0


@wp.func
def fast_atan2(y: float, x: float) -> float:
    """atan2 to ~1e-5 rad: enough to pick a lookup cell (candidate lists have a one-cell margin)."""
    ax = wp.abs(x)
    ay = wp.abs(y)
    mx = wp.max(ax, ay)
    a = float(0.0)
    if mx > 0.0:
        a = wp.min(ax, ay) / mx
    s2 = a * a
    r = ((((-0.0117212 * s2 + 0.05265332) * s2 - 0.11643287) * s2 + 0.19354346) * s2 - 0.33262347) * s2 + 0.99997726
    r = r * a
    if ay > ax:
        r = 1.5707963267948966 - r
    if x < 0.0:
        r = 3.141592653589793 - r
    if y < 0.0:
        r = -r
    return r


@wp.func
def find_pmt(g: Analytic, q: wp.vec3) -> int:
    """Channel whose photocathode contains wall point ``q``, or -1 (photocathodes do not overlap)."""
    nq = wp.length(q)
    u = float(0.0)
    if nq > 0.0:
        u = q[2] / nq
    iu = wp.clamp(int((u + 1.0) * (0.5 * float(g.n_u))), 0, g.n_u - 1)
    phi = fast_atan2(q[1], q[0])
    ip = wp.clamp(int((phi + 3.141592653589793) * (float(g.n_phi) / TWO_PI)), 0, g.n_phi - 1)
    cell = iu * g.n_phi + ip
    found = int(-1)
    for col in range(g.candidates.shape[1]):
        k = g.candidates[cell, col]
        if k < 0:
            break
        v = q - g.pmt_pos[k]
        depth = wp.dot(v, g.pmt_nrm[k])
        if wp.dot(v, v) - depth * depth <= g.pmt_r2 and wp.abs(depth) <= g.max_depth:
            found = k
            break
    return found


@wp.func
def quad_roots(a: float, b: float, c: float) -> tuple[int, float, float]:
    """Real roots t0 <= t1 of a t^2 + 2 b t + c = 0 (a > 0), in the cancellation-free form."""
    disc = b * b - a * c
    if disc < 0.0 or a <= 0.0:
        return 0, 0.0, 0.0
    sq = wp.sqrt(disc)
    q = -b - sq
    if b < 0.0:
        q = -b + sq
    t0 = q / a
    t1 = t0
    if q != 0.0:
        t1 = c / q
    if t0 > t1:
        tmp = t0
        t0 = t1
        t1 = tmp
    return 1, t0, t1


@wp.func
def analytic_hit(kind: int, par: wp.array2d(dtype=float), sh: int, p: wp.vec3, d: wp.vec3,
                 tmax: float) -> tuple[int, float, wp.vec3]:
    """Nearest crossing 0 < t < tmax of the ray p + t d with an analytic shape's exact boundary
    (shape frame), and the outward normal there: every piece of the boundary is intersected and a
    root counts where it lies on the solid's boundary (a small tolerance closes the edges)."""
    best = tmax
    found = int(0)
    nrm = wp.vec3(0.0, 0.0, 1.0)
    if kind == 1:  # ellipsoid (a, b, c) cut to zmin <= z <= zmax
        a = par[sh, 0]
        b = par[sh, 1]
        c = par[sh, 2]
        zmin = par[sh, 3]
        zmax = par[sh, 4]
        tol = 1.0e-6 * (a + b + c)
        ps = wp.vec3(p[0] / a, p[1] / b, p[2] / c)
        ds = wp.vec3(d[0] / a, d[1] / b, d[2] / c)
        ok, t0, t1 = quad_roots(wp.dot(ds, ds), wp.dot(ps, ds), wp.dot(ps, ps) - 1.0)
        if ok == 1:
            for k in range(2):
                t = t0
                if k == 1:
                    t = t1
                if t > 0.0 and t < best:
                    q = p + t * d
                    if q[2] >= zmin - tol and q[2] <= zmax + tol:
                        best = t
                        found = 1
                        nrm = wp.normalize(wp.vec3(q[0] / (a * a), q[1] / (b * b), q[2] / (c * c)))
        if wp.abs(d[2]) > 1.0e-20:
            for k in range(2):
                zc = zmin
                sgn = -1.0
                if k == 1:
                    zc = zmax
                    sgn = 1.0
                if wp.abs(zc) < c:
                    t = (zc - p[2]) / d[2]
                    if t > 0.0 and t < best:
                        q = p + t * d
                        if (q[0] / a) * (q[0] / a) + (q[1] / b) * (q[1] / b) <= 1.0 - (zc / c) * (zc / c) + 1.0e-6:
                            best = t
                            found = 1
                            nrm = wp.vec3(0.0, 0.0, sgn)
    elif kind == 2:  # spherical shell rmin <= |x| <= r
        for k in range(2):
            r = par[sh, 0]
            sgn = 1.0
            if k == 1:
                r = par[sh, 1]
                sgn = -1.0
            if r > 0.0:
                ok, t0, t1 = quad_roots(wp.dot(d, d), wp.dot(p, d), wp.dot(p, p) - r * r)
                if ok == 1:
                    t = t0
                    if t <= 0.0:
                        t = t1
                    if t > 0.0 and t < best:
                        best = t
                        found = 1
                        nrm = sgn * wp.normalize(p + t * d)
    elif kind == 3:  # tube rmin <= rho <= rmax, |z| <= hz
        rmax = par[sh, 0]
        rmin = par[sh, 1]
        hz = par[sh, 2]
        tol = 1.0e-6 * (rmax + hz)
        aa = d[0] * d[0] + d[1] * d[1]
        bb = p[0] * d[0] + p[1] * d[1]
        for k in range(2):
            r = rmax
            sgn = 1.0
            if k == 1:
                r = rmin
                sgn = -1.0
            if r > 0.0:
                ok, t0, t1 = quad_roots(aa, bb, p[0] * p[0] + p[1] * p[1] - r * r)
                if ok == 1:
                    for j in range(2):
                        t = t0
                        if j == 1:
                            t = t1
                        if t > 0.0 and t < best:
                            q = p + t * d
                            if wp.abs(q[2]) <= hz + tol:
                                best = t
                                found = 1
                                nrm = sgn * wp.normalize(wp.vec3(q[0], q[1], 0.0))
        if wp.abs(d[2]) > 1.0e-20:
            for k in range(2):
                zc = -hz
                if k == 1:
                    zc = hz
                t = (zc - p[2]) / d[2]
                if t > 0.0 and t < best:
                    q = p + t * d
                    rho2 = q[0] * q[0] + q[1] * q[1]
                    if rho2 <= (rmax + tol) * (rmax + tol) and rho2 >= (rmin - tol) * (rmin - tol):
                        best = t
                        found = 1
                        nrm = wp.vec3(0.0, 0.0, wp.sign(zc))
    elif kind == 4:  # box |x| <= hx, |y| <= hy, |z| <= hz
        h = wp.vec3(par[sh, 0], par[sh, 1], par[sh, 2])
        tol = 1.0e-6 * (h[0] + h[1] + h[2])
        for axis in range(3):
            if wp.abs(d[axis]) > 1.0e-20:
                for k in range(2):
                    side = -1.0
                    if k == 1:
                        side = 1.0
                    t = (side * h[axis] - p[axis]) / d[axis]
                    if t > 0.0 and t < best:
                        q = p + t * d
                        inside = int(1)
                        for other in range(3):
                            if other != axis and wp.abs(q[other]) > h[other] + tol:
                                inside = 0
                        if inside == 1:
                            best = t
                            found = 1
                            nrm = wp.vec3(0.0)
                            nrm[axis] = side
    return found, best, nrm


@wp.func
def scene_hit(g: SceneGeo, p: wp.vec3, d: wp.vec3) -> tuple[int, int, float, wp.vec3]:
    """Nearest boundary along p + t d: (instance or -1, face, t, outward world normal there).

    The top-level BVH yields the instances whose bounds the ray crosses closer than the best hit
    so far; each is queried in its own frame (the local ray has the same parameter t).
    """
    best = float(1.0e30)
    inst = int(-1)
    face = int(0)
    nrm = wp.vec3(0.0, 0.0, 1.0)
    q = wp.bvh_query_ray(g.top, p, d)
    i = int(0)
    while wp.bvh_query_next(q, i, best):
        a_inv = g.inv[i]
        lp = a_inv @ (p - g.offset[i])
        ld = a_inv @ d
        sh = g.shape[i]
        kind = g.kind[sh]
        if kind == 0:
            h = wp.mesh_query_ray(g.meshes[sh], lp, ld, best)
            if h.result:
                if h.t < best:
                    best = h.t
                    inst = i
                    face = h.face
                    nrm = wp.transpose(a_inv) @ h.normal
        else:
            ok, t, n_loc = analytic_hit(kind, g.par, sh, lp, ld, best)
            if ok == 1:
                best = t
                inst = i
                face = 0
                nrm = wp.transpose(a_inv) @ n_loc
    return inst, face, best, wp.normalize(nrm)


# ------------------------------------------------------------------------------------------
# Boundary physics


@wp.func
def fresnel(d: wp.vec3, pol: wp.vec3, nf: wp.vec3, n1: float, n2: float,
            state: wp.uint32) -> tuple[wp.vec3, wp.vec3, int, wp.uint32]:
    """Reflect or refract at a dielectric boundary; ``nf`` is the unit normal facing the incoming side.

    The photon is projected onto s or p polarisation with the probabilities of its polarisation
    vector, then reflected with that component's Fresnel reflectance (Chroma's scheme). Returns
    new direction, polarisation and 1 if it was transmitted.
    """
    s = state
    cos_i = wp.clamp(-wp.dot(d, nf), 0.0, 1.0)
    eta = n1 / n2
    sin_t2 = eta * eta * (1.0 - cos_i * cos_i)
    plane = wp.cross(d, nf)
    lp = wp.length(plane)
    s_hat = wp.vec3(0.0)
    if lp > 1.0e-6:
        s_hat = plane / lp
    else:
        s_hat = pol - wp.dot(pol, d) * d
        ls = wp.length(s_hat)
        if ls > 1.0e-6:
            s_hat = s_hat / ls
        else:
            s_hat = any_perpendicular(d)
    ps = wp.dot(pol, s_hat)
    is_s = int(0)
    if wp.randf(s) < ps * ps:
        is_s = 1
    refl = wp.normalize(d + 2.0 * cos_i * nf)
    new_d = refl
    transmitted = int(0)
    r = float(1.0)
    cos_t = float(0.0)
    if sin_t2 < 1.0:
        cos_t = wp.sqrt(1.0 - sin_t2)
        if is_s == 1:
            rs = (n1 * cos_i - n2 * cos_t) / (n1 * cos_i + n2 * cos_t)
            r = rs * rs
        else:
            rp = (n2 * cos_i - n1 * cos_t) / (n2 * cos_i + n1 * cos_t)
            r = rp * rp
        if wp.randf(s) >= r:
            transmitted = 1
            new_d = wp.normalize(eta * d + (eta * cos_i - cos_t) * nf)
    new_pol = s_hat
    if is_s == 0:
        new_pol = wp.normalize(wp.cross(s_hat, new_d))
    return new_d, new_pol, transmitted, s


# ------------------------------------------------------------------------------------------
# Kernels


@wp.kernel
def propagate(inp: PhotonsIn, out: PhotonsOut, opt: Optics, ana: Analytic, scn: SceneGeo, mode: int,
              events: Events, first_index: int, offset: int, count: int, per_task: int, max_steps: int,
              write_all: int):
    """Photons offset + [tid * per_task, (tid + 1) * per_task) of the chunk, capped at offset + count.

    The chunk's row i is row first_index + i of the pass, which may hold many events: photon i's
    stream is keyed by its event's seed and its index within that event, so its history is the
    same whatever else shares the pass. On the CPU one task takes a whole sub-range (per-task
    argument set-up is then paid once); on CUDA each task takes one photon.
    """
    lo = offset + wp.tid() * per_task
    hi = wp.min(lo + per_task, offset + count)
    for i in range(lo, hi):
        pos = wp.vec3(inp.x[i], inp.y[i], inp.z[i])
        d = wp.vec3(inp.dx[i], inp.dy[i], inp.dz[i])
        pol = wp.vec3(inp.px[i], inp.py[i], inp.pz[i])
        wl = inp.wl[i]
        t = inp.t[i]
        flags = inp.flags[i]
        channel = int(-1)
        steps = int(0)
        e = inp.ev[i]
        s = wp.rand_init(events.seed[e], first_index + i - events.start[e])

        live = int(1)
        if (flags & F_TERMINAL) != wp.uint32(0):
            live = 0
        elif not (wp.isfinite(pos) and wp.isfinite(d) and wp.isfinite(pol) and wp.isfinite(wl) and wp.isfinite(t)):
            flags = flags | F_NAN_ABORT
            live = 0
        else:
            # Normalised on entry without overflow (|d|^2 of 1e20-scale float32 input is inf): a
            # zero direction cannot be propagated, a degenerate polarisation is drawn at random.
            ok = int(0)
            d, ok = scaled_unit(d)
            if ok == 0:
                flags = flags | F_NAN_ABORT
                live = 0
            else:
                pol, s = transverse(d, pol, s)

        # The analytic world is the vessel: photons starting outside it are not traced.
        if live == 1 and mode == MODE_ANALYTIC:
            if analytic_inside(ana, pos) == 0:
                flags = flags | F_NO_HIT
                live = 0

        while live == 1 and steps < max_steps:
            steps += 1
            # --- next boundary: distance, outward normal, materials, surface, channel
            dist = float(0.0)
            n_out = wp.vec3(0.0)
            m_in = int(0)
            m_out = int(0)
            surf = int(-1)
            chan = int(-1)
            exiting = int(0)
            found = int(0)
            if mode == MODE_ANALYTIC:
                ta, tb, na, nb, ok = analytic_interval(ana, pos, d)
                if ok == 1:
                    dist = wp.max(tb, 0.0)
                    n_out = nb
                    exiting = 1
                    found = 1
                    m_in = ana.mat_in
                    m_out = ana.mat_out
                    surf = ana.wall_surface
            else:
                inst, face, th, nw = scene_hit(scn, pos, d)
                if inst >= 0:
                    found = 1
                    dist = th
                    n_out = nw
                    if wp.dot(d, n_out) > 0.0:
                        exiting = 1
                    row = scn.tag_row[scn.shape[inst]]
                    if row >= 0:
                        m_in = scn.tri_tags[row + face, 0]
                        m_out = scn.tri_tags[row + face, 1]
                        surf = scn.tri_tags[row + face, 2]
                        chan = scn.tri_tags[row + face, 3]
                    else:
                        m_in = scn.mat_in[inst]
                        m_out = scn.mat_out[inst]
                        chan = scn.channel[inst]
                        if exiting == 1:
                            surf = scn.surf_exit[inst]
                        else:
                            surf = scn.surf_enter[inst]
            if found == 0:
                flags = flags | F_NO_HIT
                live = 0
                break
            m1 = m_out
            m2 = m_in
            nf = n_out
            if exiting == 1:
                m1 = m_in
                m2 = m_out
                nf = -n_out
            wi, ww = wl_cell(wl, opt.wl0, opt.inv_dwl, opt.nwl)
            vg = lerp_row(opt.groupvel, m1, wi, ww)
            # --- bulk: absorption and Rayleigh in material m1
            u1, s = uniform_open(s)
            u2, s = uniform_open(s)
            d_abs = -lerp_row(opt.abslen, m1, wi, ww) * wp.log(u1)
            d_sca = -lerp_row(opt.scatlen, m1, wi, ww) * wp.log(u2)
            if d_abs <= d_sca and d_abs < dist:
                pos = pos + d_abs * d
                t = t + d_abs / vg
                if wp.randf(s) < lerp_row(opt.reemit_prob, m1, wi, ww):
                    ncdf = opt.reemit_icdf.shape[1]
                    new_wl = float(0.0)
                    accepted = int(0)
                    tries = int(0)
                    while accepted == 0 and tries < REEMIT_TRIES:
                        tries += 1
                        f = wp.randf(s) * float(ncdf - 1)
                        j = wp.min(int(f), ncdf - 2)
                        w = f - float(j)
                        new_wl = opt.reemit_icdf[m1, j] * (1.0 - w) + opt.reemit_icdf[m1, j + 1] * w
                        if opt.reemit_red[m1] == 0 or new_wl >= wl:
                            accepted = 1
                    if accepted == 1:
                        wl = new_wl
                        d, s = isotropic(s)
                        pol, s = random_perpendicular(d, s)
                        if opt.reemit_delta[m1] == 1:
                            t = t + opt.reemit_tau[m1]
                        else:
                            u3, s = uniform_open(s)
                            t = t - opt.reemit_tau[m1] * wp.log(u3)
                        flags = flags | F_BULK_REEMIT
                        continue
                flags = flags | F_BULK_ABSORB
                live = 0
                break
            if d_sca < d_abs and d_sca < dist:
                pos = pos + d_sca * d
                t = t + d_sca / vg
                d, pol, s = rayleigh(d, pol, s)
                flags = flags | F_RAYLEIGH_SCATTER
                continue
            pos = pos + dist * d
            t = t + dist / vg
            # --- at the boundary. Geant4 kills a photon in a medium without refractive index here.
            if opt.opaque[m1] == 1:
                flags = flags | F_NO_HIT
                live = 0
                break
            if mode == MODE_ANALYTIC:
                k = find_pmt(ana, pos)  # the analytic PMT lookup is only needed here
                if k >= 0:
                    surf = ana.pmt_surface
                    chan = k
            model = MODEL_DIELECTRIC
            if surf >= 0:
                model = opt.s_model[surf]
            side = int(0)  # +1: continue on the far side, -1: back on the near side
            fresnel_now = int(0)
            if model == MODEL_DIELECTRIC and m1 == m2:
                side = 1  # Geant4: a dielectric boundary between equal materials does nothing
            elif model == MODEL_DIELECTRIC and opt.opaque[m2] == 1:
                flags = flags | F_NO_HIT  # the far side has no refractive index (NoRINDEX)
                live = 0
                break
            elif surf >= 0:
                u = wp.randf(s)
                p_abs = lerp_row(opt.s_absorb, surf, wi, ww)
                p_det = p_abs + lerp_row(opt.s_detect, surf, wi, ww)
                p_dif = p_det + lerp_row(opt.s_rdiff, surf, wi, ww)
                p_spe = p_dif + lerp_row(opt.s_rspec, surf, wi, ww)
                p_tra = p_spe + lerp_row(opt.s_trans, surf, wi, ww)
                if u < p_abs:
                    flags = flags | F_SURFACE_ABSORB
                    live = 0
                    break
                if u < p_det:
                    flags = flags | F_SURFACE_DETECT
                    channel = chan
                    live = 0
                    break
                if u < p_dif:
                    d, s = lambertian(nf, s)
                    pol, s = random_perpendicular(d, s)
                    flags = flags | F_REFLECT_DIFFUSE
                    side = -1
                elif u < p_spe:
                    d = wp.normalize(d - 2.0 * wp.dot(d, nf) * nf)
                    pol = wp.normalize(pol - 2.0 * wp.dot(pol, nf) * nf)
                    flags = flags | F_REFLECT_SPECULAR
                    side = -1
                elif u < p_tra:
                    side = 1  # straight on, direction and polarisation unchanged
                elif model == MODEL_METAL:
                    flags = flags | F_SURFACE_ABSORB  # what a metal does not reflect it absorbs
                    live = 0
                    break
                else:
                    fresnel_now = 1  # the remaining probability: a bare dielectric boundary
            else:
                fresnel_now = 1
            if side == 1 and opt.opaque[m2] == 1:
                flags = flags | F_NO_HIT
                live = 0
                break
            if fresnel_now == 1:
                if opt.opaque[m2] == 1:
                    flags = flags | F_NO_HIT
                    live = 0
                    break
                n1 = lerp_row(opt.rindex, m1, wi, ww)
                n2 = lerp_row(opt.rindex, m2, wi, ww)
                tr = int(0)
                d, pol, tr, s = fresnel(d, pol, nf, n1, n2, s)
                side = -1
                if tr == 1:
                    side = 1
                else:
                    flags = flags | F_REFLECT_SPECULAR
            if side == 1 and mode == MODE_ANALYTIC:
                # into the outer world, which the analytic geometry does not trace
                flags = flags | F_NO_HIT
                live = 0
                break
            # step off the surface towards the side the photon now travels in
            eps = 1.0e-3 + 8.0e-6 * (wp.abs(pos[0]) + wp.abs(pos[1]) + wp.abs(pos[2]))
            if mode == MODE_SCENE:
                if side == 1:
                    pos = pos - eps * nf
                else:
                    pos = pos + eps * nf

        if live == 1:
            flags = flags | F_NO_HIT  # out of steps
        hit = int(0)
        if channel >= 0 and (flags & F_SURFACE_DETECT) != wp.uint32(0):
            hit = 1
        out.is_hit[i] = hit
        # Hit compaction reads hits only: the full final state is written on request (diagnostics).
        if hit == 1 or write_all == 1:
            out.channel[i] = channel
            out.dx[i] = d[0]
            out.dy[i] = d[1]
            out.dz[i] = d[2]
            out.px[i] = pol[0]
            out.py[i] = pol[1]
            out.pz[i] = pol[2]
            out.wl[i] = wl
            out.t[i] = t
            out.flags[i] = flags
            out.x[i] = pos[0]
            out.y[i] = pos[1]
            out.z[i] = pos[2]
            out.steps[i] = steps


@wp.kernel
def compact_hits(src: PhotonsOut, index: wp.array(dtype=int), dst: PhotonsOut):
    """Copy photon i to row index[i] of ``dst`` if it is a hit (``index`` = exclusive scan of is_hit)."""
    i = wp.tid()
    if src.is_hit[i] == 1:
        j = index[i]
        dst.channel[j] = src.channel[i]
        dst.dx[j] = src.dx[i]
        dst.dy[j] = src.dy[i]
        dst.dz[j] = src.dz[i]
        dst.px[j] = src.px[i]
        dst.py[j] = src.py[i]
        dst.pz[j] = src.pz[i]
        dst.wl[j] = src.wl[i]
        dst.t[j] = src.t[i]
        dst.flags[j] = src.flags[i]
        dst.x[j] = src.x[i]
        dst.y[j] = src.y[i]
        dst.z[j] = src.z[i]
        dst.steps[j] = src.steps[i]
        dst.is_hit[j] = 1
        dst.row[j] = i


KERNELS: tuple[Any, ...] = (propagate, compact_hits)
