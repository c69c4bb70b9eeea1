"""Vine-copula particle models (issue 8): fit-back, twin goodness of fit, persistence, prediction, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import pyvinecopulib as pv
from scipy import stats

from corrtomo._shared import InputError
from corrtomo.stats import (
    Marginal,
    ParticleModel,
    fit_marginal,
    fit_particle_model,
    goodness_of_fit,
    load_particle_model,
    model_from_parts,
    pair_plot,
)

FAMILIES = pv.families


def _bicop(family, tau: float, rotation: int = 0) -> pv.Bicop:
    template = pv.Bicop(family=family, rotation=rotation)
    return pv.Bicop(family=family, rotation=rotation, parameters=template.tau_to_parameters(tau))


def _tau_standard_error(bicop: pv.Bicop, n: int, rng: np.random.Generator) -> float:
    """Asymptotic SE of Kendall's tau: 2 sd(h1) / sqrt(n), h1(u, v) = 4 C(u, v) - 2u - 2v + 1.

    Hoeffding's U-statistic projection of the kernel sign((u1 - u2)(v1 - v2)).
    """
    u = bicop.sample(20000, seeds=[int(s) for s in rng.integers(0, 2**31 - 1, 3)])
    projection = 4.0 * bicop.cdf(u) - 2.0 * u[:, 0] - 2.0 * u[:, 1]
    return float(2.0 * projection.std() / np.sqrt(n))


def _small_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(
        [0, 0, 0], [[1, -0.4, 0.5], [-0.4, 1, -0.3], [0.5, -0.3, 1]], size=n
    )
    esd = np.exp(0.3 + 0.4 * z[:, 0])
    sphericity = stats.beta.ppf(stats.norm.cdf(z[:, 1]), 30, 3)
    latent = stats.norm.cdf(z[:, 2])
    vf = np.where(latent < 0.4, 0.0, np.where(latent > 0.8, 1.0, (latent - 0.4) / 0.4))
    return pd.DataFrame(
        {
            "label": np.arange(1, n + 1),
            "esd_um": esd,
            "sphericity": sphericity,
            "vf_talc": vf,
            "volume_um3": np.pi / 6 * esd**3,
            "touches_border": np.zeros(n, dtype=bool),
        }
    )


# ------------------------------------------------------------------------------------------------
# marginals
# ------------------------------------------------------------------------------------------------


def test_marginal_families_and_atoms_are_recovered():
    rng = np.random.default_rng(1)
    sizes = rng.lognormal(0.2, 0.4, 3000)
    assert fit_marginal(sizes, name="esd_um").family == "lognormal"
    assert fit_marginal(rng.gamma(6.0, 0.5, 3000), name="area").family == "gamma"
    assert fit_marginal(rng.weibull(3.0, 3000) * 2.0, name="length").family == "weibull"

    fractions = np.concatenate([np.zeros(900), np.ones(300), rng.beta(2.0, 5.0, 1800)])
    marginal = fit_marginal(fractions, name="vf_talc")
    assert marginal.family == "zero_one_inflated_beta"
    np.testing.assert_allclose([marginal.p_zero, marginal.p_one], [0.3, 0.1])
    np.testing.assert_allclose(marginal.parameters[:2], [2.0, 5.0], rtol=0.1)
    # the randomised PIT of a law with atoms is uniform; the generalised inverse restores the atoms
    u = marginal.pit(fractions, rng)
    assert stats.kstest(u, "uniform").pvalue > 0.01
    back = marginal.ppf(u)
    assert np.mean(back == 0) == pytest.approx(0.3, abs=1e-3)
    assert np.mean(back == 1) == pytest.approx(0.1, abs=1e-3)
    # AIC = 2 k - 2 log L
    assert marginal.aic == pytest.approx(2 * marginal.n_parameters - 2 * marginal.loglik)


# ------------------------------------------------------------------------------------------------
# fit-back from a known vine
# ------------------------------------------------------------------------------------------------


def test_known_vine_is_fitted_back():
    n = 5000
    truth = {
        (frozenset({1, 2}), frozenset()): (FAMILIES.clayton, 0.6),
        (frozenset({2, 3}), frozenset()): (FAMILIES.gumbel, 0.5),
        (frozenset({1, 3}), frozenset({2})): (FAMILIES.gaussian, 0.2),
    }
    pair_copulas = [
        [_bicop(FAMILIES.clayton, 0.6), _bicop(FAMILIES.gumbel, 0.5)],
        [_bicop(FAMILIES.gaussian, 0.2)],
    ]
    vine = pv.Vinecop.from_structure(
        structure=pv.DVineStructure(order=[1, 2, 3]), pair_copulas=pair_copulas
    )
    rng = np.random.default_rng(7)
    u = np.asarray(vine.inverse_rosenblatt(np.asfortranarray(rng.random((n, 3)))))
    table = pd.DataFrame(
        {
            "esd_um": stats.lognorm.ppf(u[:, 0], 0.4, scale=1.3),
            "sphericity": stats.beta.ppf(u[:, 1], 30.0, 3.0),
            "flatness": stats.weibull_min.ppf(u[:, 2], 4.0, scale=0.8),
        }
    )
    # BIC: AIC is not consistent between nested families (BB6 contains Gumbel; with one extra
    # parameter AIC picks the larger family with probability P(chi2_1 > 2) = 0.16, BIC with
    # P(chi2_1 > log 5000) = 0.004)
    model = fit_particle_model(
        table, descriptors=list(table.columns), conditioning=None, criterion="bic", rng=0
    )
    names = {name: i + 1 for i, name in enumerate(model.descriptors)}
    fitted = {
        (
            frozenset(names[c] for c in record["conditioned"]),
            frozenset(names[c] for c in record["conditioning"]),
        ): record
        for record in model.diagnostics["pair_copulas"]
    }
    assert set(fitted) == set(truth)  # the D-vine structure is found
    for key, (family, tau) in truth.items():
        record = fitted[key]
        assert record["family"] == family.name
        se = _tau_standard_error(_bicop(family, tau), n, rng)
        assert abs(record["tau"] - tau) < 3 * se, (record, tau, se)
    assert [m.family for m in model.marginals] == ["lognormal", "beta", "weibull"]


# ------------------------------------------------------------------------------------------------
# digital twin
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin_table() -> pd.DataFrame:
    from corrtomo.measure import particle_table
    from corrtomo.synth import get_preset, make_sample

    preset = get_preset("talc-saxolite")
    preset = replace(
        preset,
        ct=replace(preset.ct, method="image"),
        sem=replace(preset.sem, n_sections=0),
        supersample=1,
    )
    # 20.5 x 24.6 x 24.6 um at 0.1 um voxels: the field, and the same 818 particles, of the former
    # 160 x 192 x 192 voxels at 0.128 um (at 160 x 192 x 192 voxels of 0.1 um only 390)
    sample = make_sample(preset, shape=(205, 246, 246), seed=0)
    names = {int(i): n for i, n in zip(sample.library.ids, sample.library.names, strict=True)}
    return particle_table(
        sample.particles, sample.phases, spacing=sample.voxel_size_um, phase_names=names
    )


def test_twin_population_is_reproduced(twin_table):
    from corrtomo.liberation import liberation_degree

    descriptors = ("esd_um", "sphericity", "flatness", "vf_talc")
    model = fit_particle_model(twin_table, descriptors=descriptors, rng=0)
    assert model.n_particles == int((~twin_table["touches_border"]).sum()) > 500
    assert model.marginal("vf_talc").family == "zero_one_inflated_beta"

    check = goodness_of_fit(model, twin_table, rng=1)
    marginals = check.marginals.set_index("descriptor")
    assert (marginals["ks_pvalue"] > 0.05).all(), marginals
    assert marginals.loc["vf_talc", "atoms_pvalue"] > 0.05
    assert check.tau_max_abs_difference < 0.05, check.tau_data - check.tau_simulated
    ld = check.liberation.set_index("phase").loc["talc"]
    assert abs(ld["difference"]) < 0.05, ld

    # the LD computed here is corrtomo.liberation's on the same tables
    measured = liberation_degree(twin_table, phases=["talc"])["talc"]
    assert ld["ld_data"] == pytest.approx(measured)
    simulated = model.simulate(check.n_simulated, rng=1)
    assert ld["ld_simulated"] == pytest.approx(
        liberation_degree(simulated, phases=["talc"])["talc"]
    )

    # composition predicted from size and shape: larger particles carry more talc (as measured)
    conditions = pd.DataFrame(
        {"esd_um": [0.8, 3.0], "sphericity": [0.94, 0.94], "flatness": [0.8, 0.8]}
    )
    prediction = model.predict(conditions, target="vf_talc", n_samples=4000, rng=0)
    assert (prediction["method"] == "conditional").all()
    assert prediction["vf_talc_mean"].iloc[1] > prediction["vf_talc_mean"].iloc[0]
    q = prediction[["vf_talc_q0.05", "vf_talc_q0.5", "vf_talc_q0.95"]].to_numpy()
    assert np.all(np.diff(q, axis=1) >= 0) and np.all((q >= 0) & (q <= 1))


# ------------------------------------------------------------------------------------------------
# persistence
# ------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    table = _small_table()
    model = fit_particle_model(
        table, descriptors=("esd_um", "sphericity", "vf_talc"), family_set="one_par", rng=3
    )
    path = model.save(tmp_path / "model.json")
    data = json.loads(path.read_text())
    assert data["format"] == "corrtomo.particle_model" and data["descriptors"] == list(
        model.descriptors
    )
    assert [m["family"] for m in data["marginals"]] == [m.family for m in model.marginals]
    loaded = load_particle_model(path)
    pd.testing.assert_frame_equal(model.simulate(500, rng=11), loaded.simulate(500, rng=11))
    conditions = table[["esd_um", "sphericity"]].head(3)
    pd.testing.assert_frame_equal(
        model.predict(conditions, n_samples=200, rng=2),
        loaded.predict(conditions, n_samples=200, rng=2),
    )
    assert isinstance(loaded, ParticleModel) and loaded.conditioning == ("esd_um", "sphericity")


# ------------------------------------------------------------------------------------------------
# conditional prediction against the analytic Gaussian conditional
# ------------------------------------------------------------------------------------------------


def _gaussian_model(rho12: float, rho23: float, rho13: float) -> tuple[ParticleModel, np.ndarray]:
    partial = (rho13 - rho12 * rho23) / np.sqrt((1 - rho12**2) * (1 - rho23**2))
    pcs = [
        [
            pv.Bicop(family=FAMILIES.gaussian, parameters=np.array([[rho12]])),
            pv.Bicop(family=FAMILIES.gaussian, parameters=np.array([[rho23]])),
        ],
        [pv.Bicop(family=FAMILIES.gaussian, parameters=np.array([[partial]]))],
    ]
    vine = pv.Vinecop.from_structure(structure=pv.DVineStructure(order=[1, 2, 3]), pair_copulas=pcs)
    marginals = [
        Marginal("a", "lognormal", (0.5, 1.0)),
        Marginal("b", "lognormal", (0.3, 2.0)),
        Marginal("c", "lognormal", (0.8, 0.5)),
    ]
    correlation = np.array([[1, rho12, rho13], [rho12, 1, rho23], [rho13, rho23, 1]])
    return model_from_parts(marginals, vine), correlation


@pytest.mark.parametrize("target", ["c", "b", "a"])
def test_conditional_quantiles_match_the_gaussian_copula(target):
    model, correlation = _gaussian_model(0.6, 0.5, 0.45)
    names = ["a", "b", "c"]
    t = names.index(target)
    given = [i for i in range(3) if i != t]
    z_given = np.array([[-1.0, 0.5], [0.3, 1.2], [1.5, -0.5]])
    conditions = pd.DataFrame(
        {
            names[g]: model.marginals[g].ppf(stats.norm.cdf(z_given[:, k]))
            for k, g in enumerate(given)
        }
    )
    probabilities = (0.05, 0.5, 0.95)
    prediction = model.predict(
        conditions, target=target, quantiles=probabilities, n_samples=20000, rng=5
    )
    # analytic: Z_t | Z_g ~ N(S_tg S_gg^-1 z_g, 1 - S_tg S_gg^-1 S_gt)
    s_tg = correlation[t, given]
    s_gg_inv = np.linalg.inv(correlation[np.ix_(given, given)])
    mean = z_given @ (s_gg_inv @ s_tg)
    sd = np.sqrt(1.0 - s_tg @ s_gg_inv @ s_tg)
    sigma, median = model.marginals[t].parameters
    for p in probabilities:
        expected_z = mean + sd * stats.norm.ppf(p)
        got_z = np.log(prediction[f"{target}_q{p:g}"].to_numpy() / median) / sigma
        np.testing.assert_allclose(got_z, expected_z, atol=0.06 * max(sd, 0.5))
    # the middle variable of a D-vine is no sampling-order tail: importance sampling takes over
    assert set(prediction["method"]) == {"importance" if target == "b" else "conditional"}
    assert (prediction["effective_samples"] > 1000).all()


# ------------------------------------------------------------------------------------------------
# figures, CLI, bad input
# ------------------------------------------------------------------------------------------------


def test_pair_plot_is_written(tmp_path):
    table = _small_table()
    model = fit_particle_model(
        table, descriptors=("esd_um", "sphericity", "vf_talc"), family_set="one_par"
    )
    path = pair_plot(table, model.simulate(600, rng=0), model.descriptors, tmp_path / "pairs.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_fit_simulate_predict(tmp_path):
    from corrtomo.cli import main

    table = _small_table()
    table.to_csv(tmp_path / "particles.csv", index=False)
    model_path = tmp_path / "model.json"
    assert (
        main(
            [
                "model",
                "fit",
                "--particles",
                str(tmp_path / "particles.csv"),
                "--descriptors",
                "esd_um,sphericity,vf_talc",
                "--criterion",
                "bic",
                "--truncation",
                "1",
                "--family-set",
                "one_par",
                "--out",
                str(model_path),
            ]
        )
        == 0
    )
    model = load_particle_model(model_path)
    assert model.settings["criterion"] == "bic" and model.vine.trunc_lvl == 1
    assert (
        main(
            [
                "model",
                "simulate",
                "--model",
                str(model_path),
                "-n",
                "50",
                "--seed",
                "4",
                "--out",
                str(tmp_path / "sim.csv"),
            ]
        )
        == 0
    )
    simulated = pd.read_csv(tmp_path / "sim.csv")
    assert len(simulated) == 50 and {"esd_um", "sphericity", "vf_talc"} <= set(simulated.columns)
    table[["esd_um", "sphericity"]].head(4).to_csv(tmp_path / "cond.csv", index=False)
    assert (
        main(
            [
                "model",
                "predict",
                "--model",
                str(model_path),
                "--conditions",
                str(tmp_path / "cond.csv"),
                "--target",
                "vf_talc",
                "--samples",
                "300",
                "--out",
                str(tmp_path / "pred.csv"),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 4
    # bad input: one line, exit code 2
    assert (
        main(
            [
                "model",
                "fit",
                "--particles",
                str(tmp_path / "particles.csv"),
                "--descriptors",
                "esd_um,nonsense",
                "--out",
                str(tmp_path / "bad.json"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("change", "descriptors", "message"),
    [
        (lambda t: t.head(25), ("esd_um", "sphericity", "vf_talc"), "too few"),
        (lambda t: t.assign(sphericity=0.9), ("esd_um", "sphericity"), "constant"),
        (
            lambda t: t.assign(esd_um=t["esd_um"].where(t.index != 5)),
            ("esd_um", "sphericity"),
            "NaN",
        ),
        (lambda t: t, ("esd_um", "roundness"), "unknown descriptor"),
        (lambda t: t.assign(esd_um=-t["esd_um"]), ("esd_um", "sphericity"), "positive"),
        (lambda t: t.assign(vf_talc=t["vf_talc"] + 0.5), ("esd_um", "vf_talc"), "[0, 1]"),
    ],
)
def test_bad_tables_give_one_line_errors(change, descriptors, message):
    with pytest.raises(InputError, match=None) as error:
        fit_particle_model(change(_small_table()), descriptors=descriptors, family_set="one_par")
    text = str(error.value)
    assert message in text and "\n" not in text


def test_bad_options_and_files(tmp_path):
    table = _small_table()
    with pytest.raises(InputError, match="criterion"):
        fit_particle_model(table, descriptors=("esd_um", "sphericity"), criterion="hqc")
    with pytest.raises(InputError, match="family"):
        fit_particle_model(table, descriptors=("esd_um", "sphericity"), family_set="nonsense")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a corrtomo particle model"):
        load_particle_model(tmp_path / "other.json")
    model = fit_particle_model(
        table, descriptors=("esd_um", "sphericity", "vf_talc"), family_set="one_par"
    )
    with pytest.raises(InputError, match="unknown target"):
        model.predict(table[["esd_um"]].head(2), target="vf_quartz")
    with pytest.raises(InputError, match="NaN"):
        model.predict(pd.DataFrame({"esd_um": [np.nan]}), target="vf_talc")
