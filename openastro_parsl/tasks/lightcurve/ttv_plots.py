"""Figures of the joint TTV fit: the corner plot of the free parameters and the O-C diagram with draws.

Both are matplotlib Figures (no pyplot state), so they are built on workers without a display.
"""

from __future__ import annotations

import numpy as np

from .ttv_model import SystemModel, fit_linear_ephemeris


def _figure_module():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure


def corner_figure(model: SystemModel, results, cols: dict[str, np.ndarray], ml: dict, title: str = ""):
    """dynesty's corner plot of the free parameters (log10 of masses), the maximum-likelihood point marked."""
    from dynesty import plotting
    from dynesty.utils import results_substitute

    Figure = _figure_module()
    columns, labels, mark = [], [], []
    for n in model.free:
        x, v = cols[n], ml[n]
        unit = model.prior(n).unit
        if n.endswith(":mass"):
            x, v = np.log10(x), np.log10(v)
            labels.append(f"log10 {n} [{unit}]")
        else:
            labels.append(f"{n} [{unit}]" if unit else n)
        columns.append(x)
        mark.append(v)
    res = results_substitute(results, {"samples": np.column_stack(columns)})
    k = len(columns)
    fig = Figure(figsize=(1.9 * k + 1, 1.9 * k + 1))
    axes = fig.subplots(k, k, squeeze=False)
    try:
        plotting.cornerplot(res, labels=labels, truths=mark, truth_color="tab:red",
                            quantiles=[0.025, 0.5, 0.975], smooth=0.06, fig=(fig, axes), show_titles=True,
                            title_fmt=".3g", max_n_ticks=3, label_kwargs={"fontsize": 7},
                            title_kwargs={"fontsize": 7})
    except ValueError as exc:  # a posterior too narrow or too short to contour (a run cut off by maxcall)
        fig = Figure(figsize=(6, 2))
        fig.text(0.02, 0.5, f"{title}: no corner plot ({exc}); {len(res.samples)} samples", fontsize=9)
        return fig
    fig.suptitle(f"{title}  ln Z = {results.logz[-1]:.2f} ± {results.logzerr[-1]:.2f}  (red: max likelihood)",
                 fontsize=10)
    return fig


def oc_figure(model: SystemModel, draws: list[dict[str, float]], ml: dict, title: str = ""):
    """O-C (minutes, against each planet's linear ephemeris) of every transiting planet: the data with error
    bars, the model of each posterior draw (grey) and of the maximum-likelihood sample (red), over epochs
    from the first to the last observed one."""
    Figure = _figure_module()
    n = len(model.data)
    fig = Figure(figsize=(8, 2.6 * n + 0.6))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    dense = _dense_model(model)
    for ax, d in zip(axes, model.data, strict=True):
        t0, period, _ = fit_linear_ephemeris(d.epochs - d.epochs[0], d.times, d.errors)
        rel = d.epochs - d.epochs[0]
        for k, p in enumerate(draws + [ml]):
            times = dense.transit_times(p)
            if times is None:
                continue
            e_all = dense.data[model.data.index(d)].epochs - d.epochs[0]
            oc = (times[model.data.index(d)] - (t0 + period * e_all)) * 1440.0
            last = k == len(draws)
            ax.plot(e_all, oc, color="tab:red" if last else "0.6", lw=1.2 if last else 0.6,
                    alpha=1.0 if last else 0.35, zorder=3 if last else 1)
        ax.errorbar(rel, (d.times - (t0 + period * rel)) * 1440.0, d.errors * 1440.0, fmt="o", color="k",
                    ms=4, capsize=2, zorder=4)
        ax.set_ylabel(f"{d.name} O-C [min]")
        ax.set_xlabel(f"epoch since {d.epochs[0]} (P = {period:.5f} d)")
    axes[0].set_title(f"{title}: data, {len(draws)} posterior draws (grey), max likelihood (red)", fontsize=9)
    fig.tight_layout()
    return fig


def _dense_model(model: SystemModel) -> SystemModel:
    """The model with every epoch between each planet's first and last observed one (smooth O-C curves)."""
    from dataclasses import replace

    data = []
    for d in model.data:
        epochs = np.arange(d.epochs[0], d.epochs[-1] + 1)
        data.append(replace(d, epochs=epochs, times=d.t0 + d.period * (epochs - epochs[0]),
                            errors=np.ones(len(epochs))))
    dense = replace(model, data=tuple(data))
    dense.t_ref, dense.t_start, dense.t_end = model.t_ref, model.t_start, model.t_end
    return dense
