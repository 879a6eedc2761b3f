"""Camera-shake motion blur from random camera trajectories (Boracchi & Foi, IEEE TIP 2012).

A trajectory is a 2-D random walk of ``steps`` points with constant speed: at every step
the velocity changes by a Gaussian perturbation, a centripetal pull towards the origin and,
rarely, an abrupt shake that reverses the direction (the "anxiety", centripetal, Gaussian
and big-shake terms of Boracchi & Foi are drawn per image from their published ranges:
anxiety U(0, 0.1)·``shake``, centripetal U(0, 0.7), Gaussian U(0, 10), big-shake frequency
U(0, 0.2)). The walk is rescaled so that its total path length is
``strength · length_max · min(H, W)`` pixels, the first ``exposure`` fraction of it is kept,
(for intensities that strength 1 does not reach, the calibration continues up to the top of
``length_max``'s range, half the shorter side), and it is rasterised into a point-spread
function by bilinear splatting of densely
resampled trajectory points. The kernel is normalised to sum 1 (so the mean brightness is
preserved) and applied as a true convolution via the FFT, reflecting the borders.

Rotation (``rotation``, the second parameter): real camera shake also turns the camera about
its optical axis (roll), and then the blur grows with the distance from the centre of that
rotation (Whyte et al., "Non-uniform deblurring for shaken images", IJCV 2012). First-order
model: the blurred image is mixed with the sharp one with the weight
``(1 − rotation) + rotation·r/r_max``, ``r`` the distance from a centre drawn uniformly in the
frame per image (``r_max`` its largest value in the frame). 0 = uniform blur; 1 = no blur at the
centre, the full blur at the farthest corner. At the same μ, rotation concentrates the change
on part of the frame, so σ grows.
"""

from __future__ import annotations

import math

import torch

from .base import Degradation, Param, border_mode, fft_conv, odd, param_values, reach_of
from .strips import bilinear_rows, conv_rows, is_split, strips

#: default share of in-plane rotation in the shake
ROTATION = 0.0

PARAMS = {
    "length_max": Param(0.15, 0.0, 0.5, "path length of the camera trajectory at strength 1, as a fraction of the shorter side"),
    "exposure": Param(1.0, 0.05, 1.0, "fraction of the trajectory the shutter records (Boracchi–Foi exposure T)"),
    "shake": Param(1.0, 0.0, 5.0, "multiplier of the random-walk 'anxiety' (0 = straight line)"),
    "steps": Param(128, 8, 2048, "points of the random walk"),
    "rotation": Param(ROTATION, 0.0, 1.0, "share of in-plane rotation: the blur grows from a random centre to the "
                      "farthest corner (the second parameter: at the same mu, more rotation gives more sigma)"),
}

#: the range in which the joint calibration searches ``rotation`` to set σ at a μ
SIGMA_RANGE = (0.0, 1.0)


def rotation_weights(b: int, h: int, w: int, rotation: torch.Tensor, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """``[B,1,h',w']`` blur weights ``(1 − rotation) + rotation·r/r_max`` at a reduced resolution
    (shorter side ≈ 64 px; the weights are a cone, upsampled bilinearly); the centre is drawn per image."""
    pos = torch.rand((b, 2), generator=generator, device=device)
    f = max(1, min(h, w) // 64)
    hs, ws = -(-h // f), -(-w // f)
    ys = (torch.arange(hs, device=device, dtype=torch.float32) + 0.5) / hs
    xs = (torch.arange(ws, device=device, dtype=torch.float32) + 0.5) / ws
    cy, cx = pos[:, 0].view(-1, 1, 1), pos[:, 1].view(-1, 1, 1)
    r = torch.sqrt(((ys.view(1, -1, 1) - cy) * h) ** 2 + ((xs.view(1, 1, -1) - cx) * w) ** 2)
    r = r / r.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1)
    rot = rotation.view(-1, 1, 1)
    return ((1.0 - rot) + rot * r).unsqueeze(1)


def trajectories(b: int, steps: int, shake: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[B,steps,2]`` random-walk camera paths of total length 1, starting at the origin."""
    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand((b,), generator=generator, device=device) * (hi - lo) + lo

    anxiety = u(0.0, 0.1) * shake
    centripetal = u(0.0, 0.7)
    gauss = u(0.0, 10.0)
    freq_big = u(0.0, 0.2)
    angle0 = u(0.0, 2 * math.pi)
    step_len = 1.0 / (steps - 1)
    rnd = torch.randn((steps, b, 2), generator=generator, device=device)
    big = torch.rand((steps, b), generator=generator, device=device)
    big_angle = torch.rand((steps, b), generator=generator, device=device) - 0.5
    # the walk is sequential and tiny (B × steps points): plain Python floats are far faster
    # than hundreds of small tensor operations
    cols = [t.double().cpu().tolist() for t in (anxiety, centripetal, gauss, freq_big, angle0)]
    rnd_l, big_l, ang_l = rnd.double().cpu().tolist(), big.double().cpu().tolist(), big_angle.double().cpu().tolist()
    out = torch.empty(b, steps, 2, dtype=torch.float64)
    for i in range(b):
        anx, cen, gs, fb, a0 = (c[i] for c in cols)
        vx, vy = math.cos(a0) * step_len, math.sin(a0) * step_len
        px = py = 0.0
        path = [(0.0, 0.0)]
        for t in range(steps - 1):
            dvx = anx * (gs * rnd_l[t][i][0] - cen * px) * step_len
            dvy = anx * (gs * rnd_l[t][i][1] - cen * py) * step_len
            if big_l[t][i] < fb * anx:  # abrupt shake: twice the velocity, turned by π + U(−0.5, 0.5) radians
                ang = math.pi + ang_l[t][i]
                c, sn = math.cos(ang), math.sin(ang)
                dvx += 2.0 * (vx * c - vy * sn)
                dvy += 2.0 * (vx * sn + vy * c)
            vx, vy = vx + dvx, vy + dvy
            norm = max(math.hypot(vx, vy), 1e-12)
            vx, vy = vx / norm * step_len, vy / norm * step_len
            px, py = px + vx, py + vy
            path.append((px, py))
        out[i] = torch.tensor(path, dtype=torch.float64)
    return out.to(device=device, dtype=torch.float32)


def rasterize(paths: torch.Tensor, lengths: torch.Tensor, exposure: float, size: int) -> torch.Tensor:
    """Point-spread functions ``[B,size,size]`` (sum 1) of paths scaled to ``lengths`` pixels."""
    b, steps, _ = paths.shape
    keep = max(2, int(round(exposure * steps)))
    p = paths[:, :keep] * lengths.view(-1, 1, 1)
    # resample densely (≤ 0.25 px apart) so the kernel is a continuous streak
    dense = max(keep, int(math.ceil(float(lengths.max()) * exposure * 4)) + 1)
    p = torch.nn.functional.interpolate(p.transpose(1, 2), size=dense, mode="linear", align_corners=True).transpose(1, 2)
    centre = (p.amax(dim=1, keepdim=True) + p.amin(dim=1, keepdim=True)) / 2
    p = p - centre + size // 2
    x, y = p[..., 0], p[..., 1]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    k = torch.zeros(b, size * size, device=paths.device)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long().clamp(0, size - 1), (y0 + dy).long().clamp(0, size - 1)
        k.scatter_add_(1, yi * size + xi, w)
    k = k.view(b, size, size)
    return k / k.sum(dim=(-2, -1), keepdim=True)


def motion_kernels(
    b: int, side: int, strength: torch.Tensor, generator: torch.Generator, device: torch.device, *,
    length_max: float = 0.15, exposure: float = 1.0, shake: float = 1.0, steps: int = 128,
) -> torch.Tensor:
    """Blur kernels ``[B,K,K]`` for images whose shorter side is ``side`` pixels."""
    paths = trajectories(b, steps, shake, generator, device)
    lengths = strength.to(device) * length_max * side
    size = odd(float(lengths.max()) * exposure + 3)
    return rasterize(paths, lengths, exposure, size)


def motion_blur(
    x: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    *,
    length_max: float = 0.15,
    exposure: float = 1.0,
    shake: float = 1.0,
    steps: int = 128,
    rotation: float | torch.Tensor = ROTATION,
) -> torch.Tensor:
    """Blurred ``[B,3,H,W]`` 0..1; ``strength`` ``[B]`` in 0..1 scales the trajectory length;
    ``rotation`` one value or ``[B]``."""
    b, _, h, w = x.shape
    k = motion_kernels(b, min(h, w), strength, generator, x.device,
                       length_max=length_max, exposure=exposure, shake=shake, steps=steps)
    rot = param_values(rotation, b, x.device)
    weights = rotation_weights(b, h, w, rot, generator, x.device)  # drawn last: the blur itself is unchanged
    if k.shape[-1] == 1:
        return x.clone()
    uniform = bool((rot == 0).all())

    def mix(xr: torch.Tensor, blurred: torch.Tensor, y0: int, y1: int) -> torch.Tensor:
        if uniform:
            return blurred.clamp_(0, 1)
        wt = bilinear_rows(weights, (h, w), y0, y1)
        return torch.lerp(xr, blurred, wt).clamp_(0, 1)

    if not is_split(h, w):
        return mix(x, fft_conv(x, k), 0, h)
    p = k.shape[-1] // 2
    mode = border_mode("reflect", p, h, w)
    out = torch.empty_like(x)
    for y0, y1 in strips(h, w, halo=p):  # large images: the same convolution, strip by strip
        out[..., y0:y1, :] = mix(x[..., y0:y1, :], conv_rows(x, k, y0, y1, mode), y0, y1)
    return out


DEGRADATION = Degradation("motion_blur", motion_blur, PARAMS, __doc__ or "", reach=reach_of(PARAMS["length_max"], "length_max"),
                          sigma_param="rotation", sigma_range=SIGMA_RANGE, sigma_increasing=False)
