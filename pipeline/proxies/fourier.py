"""Fourier views of probe images, the inputs ViNTK adds to the plain NTK.

The plain NTK mostly measures how a network fits the low frequencies that dominate natural
images; ViTs also rely on high-frequency content. These views re-present the same probe
images with chosen frequency content at comparable energy, so the kernel also sees it.

* ``band{k}of{K}``: radial band k (0 = lowest) of K equal-width rings of the 2-D spectrum
  (up to the Nyquist radius; corners go to the top band), each image/channel renormalised to
  zero mean and unit variance so high bands are not negligible.
* ``rff{sigma}``: random Fourier features of each pixel's channel vector,
  ``sqrt(2) cos(2 pi sigma B x + b)`` with B ~ N(0, 1) (C x C) and b ~ U(0, 2 pi), seeded; it
  keeps the input shape and injects high frequencies in proportion to sigma.
* ``identity``: the images themselves.
"""
from __future__ import annotations

import math
import re

import torch


def _standardize(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


def band_view(images: torch.Tensor, band: int, bands: int) -> torch.Tensor:
    """Band ``band`` of ``bands`` radial frequency rings, renormalised per image and channel."""
    if not 0 <= band < bands:
        raise ValueError(f"band {band} is outside 0..{bands - 1}")
    h, w = images.shape[-2:]
    fy = torch.fft.fftfreq(h, device=images.device)[:, None]
    fx = torch.fft.rfftfreq(w, device=images.device)[None, :]
    radius = torch.sqrt(fy ** 2 + fx ** 2) / 0.5          # 1.0 = Nyquist along an axis
    lo, hi = band / bands, (band + 1) / bands
    mask = (radius >= lo) & ((radius < hi) | (band == bands - 1))
    spectrum = torch.fft.rfft2(images.float())
    out = torch.fft.irfft2(spectrum * mask, s=(h, w))
    return _standardize(out).to(images.dtype)


def rff_view(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Random Fourier features of pixel values, same shape as ``images``."""
    c = images.shape[1]
    gen = torch.Generator().manual_seed(seed)
    b_mat = torch.randn(c, c, generator=gen).to(images)
    phase = (torch.rand(c, generator=gen) * 2 * math.pi).to(images)
    proj = torch.einsum("oc,bchw->bohw", b_mat, images)
    return math.sqrt(2.0) * torch.cos(2 * math.pi * sigma * proj + phase[None, :, None, None])


_BAND = re.compile(r"^band(\d+)of(\d+)$")
_RFF = re.compile(r"^rff([0-9.]+)$")


def make_view(images: torch.Tensor, view: str, seed: int = 0) -> torch.Tensor:
    """Apply a view by name: ``identity``, ``band{k}of{K}`` or ``rff{sigma}``."""
    if view == "identity":
        return images
    if m := _BAND.match(view):
        return band_view(images, int(m.group(1)), int(m.group(2)))
    if m := _RFF.match(view):
        return rff_view(images, float(m.group(1)), seed)
    raise ValueError(f"unknown view {view!r}; use identity, band<k>of<K> (e.g. band2of3) or rff<sigma> (e.g. rff1)")
