"""Coloured (power-law) noise for iCEM (Pinneri et al. 2020, section 3.1)."""

from __future__ import annotations

import torch
from torch import Tensor


def colored_noise(beta: float, shape: tuple[int, int, int], *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """Unit-variance noise ``[N, H, A]`` whose power spectrum along ``H`` falls as ``1 / f^beta``.

    ``beta = 0`` is white noise; larger ``beta`` gives smoother, more correlated action sequences.
    """
    N, H, A = shape
    if beta == 0 or H < 2:
        return torch.randn(shape, generator=generator, device=device)
    freqs = torch.fft.rfftfreq(H, device=device)
    freqs[0] = 1.0 / H  # no infinite power at frequency 0
    scale = freqs.pow(-beta / 2.0)  # amplitude ~ f^(-beta/2) so power ~ f^(-beta)
    real = torch.randn((N, A, freqs.shape[0]), generator=generator, device=device)
    imag = torch.randn((N, A, freqs.shape[0]), generator=generator, device=device)
    imag[..., 0] = 0
    if H % 2 == 0:
        imag[..., -1] = 0
    spectrum = torch.complex(real * scale, imag * scale)
    signal = torch.fft.irfft(spectrum, n=H, dim=-1)  # [N, A, H]
    # Var(x_t) = (s_0^2 + 4 * sum_mid s_k^2 + s_nyquist^2) / H^2 for the irfft of this spectrum.
    weights = torch.full_like(scale, 4.0)
    weights[0] = 1.0
    if H % 2 == 0:
        weights[-1] = 1.0
    sigma = torch.sqrt((weights * scale.pow(2)).sum()) / H
    signal = signal / sigma
    return signal.transpose(1, 2).contiguous()
