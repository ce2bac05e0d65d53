"""The adaptive evaluation on Ray (pd_core.adaptive.distributed), checked against the single process.

As in tests/test_ray.py, Ray runs only inside a loopback-only network namespace: the outer test
runs this file's inner tests there through ``tests/ray_namespace.py``. Tiny budgets: 4 gallery images, ε 2 and 4,
2 steps, EOT 1, Ens-2, chunks of 2 images.
"""
from __future__ import annotations

import math

import pytest

from gallery_cases import labelled_folder
from ray_namespace import INNER, inner, run_inner_tests

from pd_core.evaluation.settings import ClusterSettings

KW = dict(eps_255=(2, 4), eot=1, steps=2, seed=5, ensemble=2, batch_images=2)
SELECTION = dict(limit=4, tuning_fraction=0.0)


def _settings(**kw):
    from pd_core.adaptive.settings import AdaptiveSettings

    return AdaptiveSettings(**kw)


def _selection(**kw):
    from pd_core.adaptive.settings import ImageSelection

    return ImageSelection(**{**SELECTION, **kw})


@pytest.mark.slow
@pytest.mark.skipif(INNER, reason="outer wrapper")
def test_adaptive_ray_scenarios_in_a_loopback_namespace():
    run_inner_tests(__file__, expected_passed=5)  # the four inner tests and the CLI test


def test_cli_rejects_a_bad_ray_target_before_any_work(tmp_path, capsys):
    from pd_core.cli import main

    code = main(["adaptive", "--images", str(tmp_path), "--out", str(tmp_path / "a.csv"), "--ray", "local:zero"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "local:N" in err


# ------------------------------------------------------------------ inner tests (in the namespace)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return labelled_folder(tmp_path_factory.mktemp("gallery"), count=4)


@pytest.fixture(scope="module")
def model():
    from pd_core.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


def _same_rows(got: list[dict], ref: list[dict], floats=("mean_l2_normalised",)):
    assert len(got) == len(ref) > 0
    for g, r in zip(got, ref):
        assert set(g) == set(r)
        for k in r:
            if k == "seconds":
                continue
            if k in floats:
                assert abs(g[k] - r[k]) <= 1e-6, k
            elif isinstance(r[k], float) and math.isnan(r[k]):
                assert math.isnan(g[k]), k
            else:
                assert g[k] == r[k], (k, g[k], r[k])


@inner
def test_two_workers_give_the_single_process_rows_and_a_rerun_computes_nothing(folder, model, tmp_path):
    import ray

    from pd_core.adaptive import evaluate_adaptive
    from pd_core.adaptive.distributed import evaluate_adaptive_distributed

    reference = evaluate_adaptive(model, folder, _settings(**KW), selection=_selection())
    snaps = []
    try:
        first = evaluate_adaptive_distributed("efficientnet_lite0", folder, _settings(**KW), store=tmp_path / "shards",
                                              selection=_selection(), ray=ClusterSettings("local:2"),
                                              on_progress=snaps.append)
    finally:
        ray.shutdown()
    kept = reference[0]["n"]
    units = 1 + 3 * math.ceil(kept / 2)  # one clean unit (4 images), then ε 0, 2, 4 × chunks of 2
    d = first["distributed"]
    assert d["units"] == d["computed"] == units and d["resumed"] == 0
    assert snaps[-1].done == snaps[-1].total == units and snaps[-1].workers == 2
    _same_rows(first["rows"], reference)
    # Rows exact in the values a bug would change: the three defences' counts per ε.
    assert [r["correct"] for r in first["rows"]] == [r["correct"] for r in reference]
    rerun = evaluate_adaptive_distributed("efficientnet_lite0", folder, _settings(**KW), store=tmp_path / "shards",
                                          selection=_selection(), ray=ClusterSettings("local:2"))
    assert rerun["distributed"]["computed"] == 0 and rerun["distributed"]["resumed"] == units
    _same_rows(rerun["rows"], reference)
    assert not ray.is_initialized()  # nothing to compute: Ray was never started


@inner
def test_a_partial_store_resumes_and_a_changed_setting_recomputes(folder, tmp_path):
    import ray

    from pd_core.adaptive.distributed import evaluate_adaptive_distributed

    kw = {**KW, "eps_255": (2,)}
    run = lambda **extra: evaluate_adaptive_distributed(  # noqa: E731
        "efficientnet_lite0", folder, _settings(**{**kw, **extra}), store=tmp_path / "s",
        selection=_selection(limit=2), ray=ClusterSettings("local:1"))
    try:
        a = run()
        chunks = (a["distributed"]["units"] - 1) // 2  # the clean unit, then ε 0 and 2 per chunk
        b = run(eps_255=(2, 4))  # a run stopped after ε 2, continued: only ε 4 is computed
        c = run(steps=3)
    finally:
        ray.shutdown()
    assert b["distributed"]["resumed"] == a["distributed"]["units"] and b["distributed"]["computed"] == chunks
    assert [r["eps_255"] for r in b["rows"]][::3] == [0.0, 2.0, 4.0]
    assert b["rows"][:6] == [{**r, "seconds": b["rows"][i]["seconds"]} for i, r in enumerate(a["rows"])]
    # The clean pass is shared; every attack unit depends on the steps and is computed again.
    assert c["distributed"]["resumed"] == 1 and c["distributed"]["computed"] == a["distributed"]["computed"] - 1
    assert [r["steps"] for r in c["rows"] if r["eps_255"] > 0] == [3, 3, 3]


@inner
def test_ladder_on_two_workers_equals_the_single_process_ladder(folder, model, tmp_path):
    import ray

    from pd_core.adaptive.distributed import evaluate_adaptive_distributed
    from pd_core.adaptive.ladder import evaluate_ladder
    from pd_core.adaptive.settings import LadderSettings

    settings = LadderSettings(eps_255=(2, 4), steps=2, eot=2, ensemble=2, seed=5)
    selection = _selection(limit=3)
    rows, found, report = evaluate_ladder(model, folder, None, settings, selection)
    try:
        got = evaluate_adaptive_distributed("efficientnet_lite0", folder, settings, store=tmp_path / "ladder",
                                            selection=selection, ray=ClusterSettings("local:2"))
    finally:
        ray.shutdown()
    assert got["distributed"]["computed"] == 1 + 1 + 2 * 4 * 2 + 1  # clean pass, clean judge, grid, checks
    _same_rows(got["rows"], rows, floats=())
    assert [(c.name, c.status, c.numbers) for c in got["checks"]] == [(c.name, c.status, c.numbers) for c in found]
    assert got["input_size"] == 224
    assert got["defence"] == report["defence"]


@inner
def test_a_plugin_ladder_on_ray_equals_the_single_process_and_resumes(folder, model, tmp_path):
    """``--defence FILE.py:FUNCTION`` on Ray: each worker loads the plugin file again, and the rows, the
    rungs (a randomised BPDA plugin: transfer, BPDA, BPDA+EOT) and the checks are the single process's."""
    import ray

    from pd_core.adaptive.distributed import evaluate_adaptive_distributed
    from pd_core.adaptive.ladder import evaluate_ladder
    from pd_core.adaptive.settings import DefenceSpec, LadderSettings

    plugin = tmp_path / "shaky.py"
    plugin.write_text("import torch\n\n\ndef shaky(x, *, generator):\n"
                      "    noise = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1\n"
                      "    return (x + noise * (2 / 255)).clamp(0, 1)\n")
    spec = DefenceSpec(f"{plugin}:shaky")
    settings = LadderSettings(eps_255=(4,), steps=2, eot=2, losses=("ce",), ensemble=2, seed=1)
    selection = _selection(limit=2)
    rows, found, report = evaluate_ladder(model, folder, spec.build(model), settings, selection)
    assert report["rungs"] == ["transfer", "bpda", "bpda_eot"]
    run = lambda: evaluate_adaptive_distributed("efficientnet_lite0", folder, settings,  # noqa: E731
                                                store=tmp_path / "plugin", defence=spec, selection=selection,
                                                ray=ClusterSettings("local:2"))
    try:
        got = run()
        again = run()
    finally:
        ray.shutdown()
    _same_rows(got["rows"], rows, floats=())
    assert [(c.name, c.status, c.numbers) for c in got["checks"]] == [(c.name, c.status, c.numbers) for c in found]
    assert got["defence"]["name"] == "shaky" and got["defence"]["randomised"] is True
    assert again["distributed"]["computed"] == 0 and again["distributed"]["resumed"] == got["distributed"]["units"]
