"""``corrtomo model fit|simulate|predict``: vine-copula models of particle size, shape and composition."""

from __future__ import annotations

from pathlib import Path

import typer

from .._shared import InputError, atomic_path, write_json_atomic
from ._app import app

model = typer.Typer(
    name="model",
    help="Multivariate particle models: parametric marginals + R-vine copula (fit, simulate, predict).",
    no_args_is_help=True,
)
app.add_typer(model, name="model")


def _read_table(path: Path, option: str):
    import pandas as pd

    if not path.is_file():
        raise InputError("no such file", source=path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (ValueError, OSError) as error:
        raise InputError(f"cannot read the table: {error}", source=path) from None
    raise InputError(f"expected a .csv or .parquet table for {option}", source=path)


def _write_csv(table, path: Path) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


@model.command("fit")
def fit_command(
    particles: Path = typer.Option(
        ..., "--particles", help="particles.csv or .parquet (corrtomo analyze)."
    ),
    out: Path = typer.Option(..., "--out", help="Model JSON to write."),
    descriptors: str | None = typer.Option(
        None,
        "--descriptors",
        help="Comma-separated columns, e.g. esd_um,sphericity,flatness,vf_talc.",
    ),
    criterion: str = typer.Option("aic", "--criterion", help="aic or bic."),
    truncation: int | None = typer.Option(None, "--truncation", help="Vine truncation level."),
    family_set: str = typer.Option(
        "parametric",
        "--family-set",
        help="pyvinecopulib set (parametric, one_par, ...) or families.",
    ),
    include_border: bool = typer.Option(
        False, "--include-border", help="Also fit particles touching the volume border."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    gof: Path | None = typer.Option(None, "--gof", help="Also write a goodness-of-fit JSON here."),
    pair_plot_path: Path | None = typer.Option(
        None, "--pair-plot", help="Also draw data-vs-simulation pair plots here (.png/.svg/.pdf)."
    ),
) -> None:
    """Fit marginal laws (by AIC/BIC) and an R-vine copula to a particle table."""
    from ..stats import fit_particle_model, goodness_of_fit, pair_plot

    table = _read_table(particles, "--particles")
    fitted = fit_particle_model(
        table,
        descriptors=descriptors,
        family_set=family_set,
        truncation_level=truncation,
        criterion=criterion,
        exclude_border=not include_border,
        rng=seed,
    )
    fitted.save(out)
    typer.echo(
        f"{out}: {fitted.n_particles} particles, {fitted.dimension} descriptors, "
        f"AIC {fitted.diagnostics['aic']:.1f}"
    )
    for marginal in fitted.marginals:
        typer.echo(f"  {marginal.name}: {marginal.family}")
    if gof is not None or pair_plot_path is not None:
        check = goodness_of_fit(fitted, table, rng=seed + 1)
        if gof is not None:
            write_json_atomic(gof, check.to_dict())
            typer.echo(
                f"{gof}: max |tau difference| {check.tau_max_abs_difference:.3f}, "
                f"min KS p-value {check.marginals['ks_pvalue'].min():.3f}"
            )
        if pair_plot_path is not None:
            simulated = fitted.simulate(max(fitted.n_particles, 1000), rng=seed + 2)
            pair_plot(table, simulated, fitted.descriptors, pair_plot_path)
            typer.echo(f"{pair_plot_path}: pair plot")


@model.command("simulate")
def simulate_command(
    model_path: Path = typer.Option(..., "--model", help="Model JSON (corrtomo model fit)."),
    n: int = typer.Option(..., "-n", "--n", help="Number of particles."),
    out: Path = typer.Option(..., "--out", help="CSV table to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Simulate a particle population from a fitted model."""
    from ..stats import load_particle_model

    fitted = load_particle_model(model_path)
    table = fitted.simulate(n, rng=seed)
    _write_csv(table, out)
    typer.echo(f"{out}: {len(table)} simulated particles")


@model.command("predict")
def predict_command(
    model_path: Path = typer.Option(..., "--model", help="Model JSON (corrtomo model fit)."),
    conditions: Path = typer.Option(
        ..., "--conditions", help="CSV/Parquet with descriptor columns to condition on."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Descriptor to predict, e.g. vf_talc."
    ),
    out: Path = typer.Option(..., "--out", help="CSV table to write."),
    quantiles: str = typer.Option(
        "0.05,0.5,0.95", "--quantiles", help="Comma-separated probabilities."
    ),
    n_samples: int = typer.Option(2000, "--samples", help="Conditional draws per row."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Predict a descriptor (e.g. a volume fraction) from others, with prediction intervals."""
    from ..stats import load_particle_model

    try:
        probabilities = [float(p) for p in quantiles.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"expected numbers, got {quantiles!r}", source="--quantiles") from None
    fitted = load_particle_model(model_path)
    table = _read_table(conditions, "--conditions")
    prediction = fitted.predict(
        table, target=target, quantiles=probabilities, n_samples=n_samples, rng=seed
    )
    _write_csv(prediction, out)
    typer.echo(f"{out}: {len(prediction)} predictions ({prediction['method'].iloc[0]} sampling)")
