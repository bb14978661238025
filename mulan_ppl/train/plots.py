"""Figures written to files during training: sample grids and per-dimension noise schedules.

Nothing here opens a window: grids are written with Pillow, curves with Matplotlib's ``Figure`` and the Agg canvas
(never ``pyplot``), so these work on headless machines and in threads.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from mulan_ppl.train.baselines import tile_images

__all__ = ["levels_to_uint8", "save_sample_grid", "save_snr_curves"]


def levels_to_uint8(images: np.ndarray, vocab_size: int) -> np.ndarray:
    """Rescales integer levels ``0 .. V-1`` to display values ``0 .. 255``: ``round(x * 255 / (V - 1))``.

    Args:
        images: integer array of any shape with values in ``[0, vocab_size)``.
        vocab_size: ``V >= 2``.

    Returns:
        ``uint8`` array of the same shape.

    Raises:
        ValueError: non-integer dtype, ``V < 2``, or a value outside ``[0, V)``.

    Example:
        >>> levels_to_uint8(np.array([0, 8, 16]), 17).tolist()
        [0, 128, 255]
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"`levels_to_uint8`: `images` must be integer levels; got dtype {images.dtype}.")
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"`levels_to_uint8`: `vocab_size` must be an integer >= 2; got {vocab_size!r}.")
    if images.size and (int(images.min()) < 0 or int(images.max()) >= vocab_size):
        raise ValueError(
            f"`levels_to_uint8`: values must lie in [0, vocab_size={vocab_size}); "
            f"got min {int(images.min())}, max {int(images.max())}."
        )
    return np.rint(images.astype(np.float64) * (255.0 / (vocab_size - 1))).astype(np.uint8)


def save_sample_grid(images: np.ndarray, path: str | os.PathLike, *, vocab_size: int,
                     num_columns: int | None = None, padding: int = 1, upscale: int = 1) -> pathlib.Path:
    """Writes integer images as one PNG grid, levels rescaled to ``0 .. 255``.

    Args:
        images: integer images ``(N, H, W, C)``, ``C`` in (1, 3), values in ``[0, vocab_size)`` (a JAX array is
            fine).
        path: output file; parent directories are created.
        vocab_size: number of levels ``V``.
        num_columns: images per row; default ``ceil(sqrt(N))``.
        padding: pixels of white between tiles, before upscaling.
        upscale: integer nearest-neighbour magnification (e.g. 4 for 8x8 digits).

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = save_sample_grid(np.zeros((6, 8, 8, 1), np.uint8), os.path.join(tmp, "s.png"), vocab_size=17)
        ...     print(Image.open(out).size)  # 3 columns x 2 rows of 8x8 with 1-pixel gaps
        (26, 17)
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`save_sample_grid`: `images` must have shape (N, H, W, C) with N >= 1 and C in (1, 3); "
            f"got {images.shape}."
        )
    if not isinstance(upscale, (int, np.integer)) or upscale < 1:
        raise ValueError(f"`save_sample_grid`: `upscale` must be an integer >= 1; got {upscale!r}.")
    from PIL import Image  # noqa: PLC0415  (Pillow is an optional dependency)

    grid = tile_images(levels_to_uint8(images, vocab_size), num_columns=num_columns, padding=padding,
                       pad_value=255)
    if upscale > 1:
        grid = np.repeat(np.repeat(grid, upscale, axis=0), upscale, axis=1)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(grid[..., 0], mode="L") if grid.shape[-1] == 1 else Image.fromarray(grid, mode="RGB")
    picture.save(path, format="PNG")
    return path


def save_snr_curves(times: np.ndarray, gammas: np.ndarray, path: str | os.PathLike, *, max_dims: int = 32,
                    title: str | None = None, dpi: int = 100) -> pathlib.Path:
    r"""Plots per-dimension log-SNR schedules for several contexts and their spread across contexts (MuLAN, Fig. 3).

    Left panel: :math:`\log \mathrm{SNR}_d(t) = -\gamma_d(t, c)` against ``t`` for up to ``max_dims`` evenly spaced
    dimensions ``d``, one colour per context ``c``. Right panel: the standard deviation across contexts,
    :math:`\mathrm{std}_c\,\gamma_d(t, c)`, summarised over all dimensions by its median and 10–90 % band, with the
    maximum dashed; a flat zero means the schedule ignores the context.

    Args:
        times: ``(T,)`` times in ``[0, 1]``, increasing.
        gammas: ``(S, T, D)`` (or ``(S, T, *event)``, flattened) values of :math:`\gamma = -\log \mathrm{SNR}` for
            ``S`` contexts, e.g. drawn from ``p(c)`` or from the encoder on ``S`` test images. A scalar schedule
            has ``D = 1``.
        path: output file (its suffix picks the format, e.g. ``.png``); parent directories are created.
        max_dims: most dimensions drawn per context in the left panel (all enter the right panel).
        title: optional figure title.
        dpi: resolution.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> t = np.linspace(0.0, 1.0, 5)
        >>> gammas = np.stack([-13.3 + 18.3 * t ** p for p in (1.0, 2.0)])[:, :, None]  # S=2, T=5, D=1
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(save_snr_curves(t, gammas, os.path.join(tmp, "snr.png")).stat().st_size > 0)
        True
    """
    times = np.asarray(times, np.float64)
    gammas = np.asarray(gammas, np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError(f"`save_snr_curves`: `times` must have shape (T,) with T >= 2; got {times.shape}.")
    if gammas.ndim < 2 or gammas.shape[1] != times.size:
        raise ValueError(
            f"`save_snr_curves`: `gammas` must have shape (S, T, D) with T = len(times) = {times.size}; "
            f"got {gammas.shape}."
        )
    if not np.all(np.isfinite(gammas)):
        raise ValueError("`save_snr_curves`: `gammas` must be finite.")
    if not isinstance(max_dims, (int, np.integer)) or max_dims < 1:
        raise ValueError(f"`save_snr_curves`: `max_dims` must be an integer >= 1; got {max_dims!r}.")
    from matplotlib import colormaps  # noqa: PLC0415  (matplotlib is an optional dependency)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    gammas = gammas.reshape(gammas.shape[0], times.size, -1)
    num_contexts, _, num_dims = gammas.shape
    shown = np.unique(np.linspace(0, num_dims - 1, min(max_dims, num_dims)).round().astype(int))

    figure = Figure(figsize=(11, 4.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    colours = colormaps["viridis"]
    for s in range(num_contexts):
        colour = colours(s / max(num_contexts - 1, 1))
        lines = left.plot(times, -gammas[s][:, shown], color=colour, lw=0.8, alpha=0.6)
        lines[0].set_label(f"c{s}")
    left.set_xlabel("t")
    left.set_ylabel("log SNR = -gamma")
    left.set_title(f"per-dimension log SNR ({len(shown)} of {num_dims} dims, {num_contexts} contexts)")
    if num_contexts <= 10:
        left.legend(fontsize="small")

    spread = gammas.std(axis=0)  # (T, D)
    low, median, high = np.percentile(spread, [10, 50, 90], axis=1)
    right.fill_between(times, low, high, alpha=0.3, label="10-90% of dims")
    right.plot(times, median, lw=1.5, label="median over dims")
    right.plot(times, spread.max(axis=1), lw=1.0, ls="--", label="max over dims")
    right.set_xlabel("t")
    right.set_ylabel("std over contexts of log SNR")
    right.set_title("spread across contexts")
    right.legend(fontsize="small")
    if title:
        figure.suptitle(title)

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
