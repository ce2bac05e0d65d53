"""The defence and Ens-10 (paper §8, §10; SPEC §1.4) on the embedded classifier."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pd_core.defence import (PAPER_DEFAULTS, DefenceConfig, defend, defend_batch, ensemble_predict,
                             predict_probs, vote)
from pd_core.deflection import deflect
from pd_core.randomness import make_generator


@pytest.fixture(scope="module")
def foolbox_samples(model):
    from pd_core.images import gallery, load_batch

    items = [g for g in gallery() if g.source == "Foolbox"]
    assert len(items) == 20
    x = load_batch([g.path for g in items], spec=model.spec, device=model.device)
    return x, torch.tensor([g.label_index for g in items])


def test_same_seed_same_defence_and_seeds_differ(model, foolbox_samples):
    x = foolbox_samples[0][:2]
    a, b = defend(model, x, seed=3), defend(model, x, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, defend(model, x, seed=4))


def test_defend_is_denoise_of_deflect_with_the_map(model, foolbox_samples):
    from pd_core.denoising import wavelet_denoise
    from pd_core.maps import robust_activation_map

    x = foolbox_samples[0][:2]
    details = defend(model, x, seed=5, return_details=True)
    rmap = robust_activation_map(model, x).rmap
    assert torch.equal(details.rmap, rmap)
    expected_deflected = deflect(x, rmap, 100, 10, generator=make_generator(5))
    assert torch.equal(details.deflected, expected_deflected)
    assert torch.allclose(details.defended, wavelet_denoise(expected_deflected), atol=1e-6)
    assert details.defended.min() >= 0 and details.defended.max() <= 1


def test_stage_switches(model, foolbox_samples):
    from pd_core.denoising import jpeg_compress, wavelet_denoise

    x = foolbox_samples[0][:2]
    wd_only = defend(model, x, replace(PAPER_DEFAULTS, deflect=False))
    assert torch.allclose(wd_only, wavelet_denoise(x), atol=1e-6)
    pd_only = defend(model, x, replace(PAPER_DEFAULTS, denoise=False, use_map=False), seed=1)
    assert torch.equal(pd_only, deflect(x, None, 100, 10, generator=make_generator(1)))
    jpeg_only = defend(model, x, DefenceConfig(deflect=False, denoise=False, jpeg_quality=75))
    assert torch.equal(jpeg_only, jpeg_compress(x, 75))


def test_accuracy_and_defended_accuracy_on_foolbox_samples(model, foolbox_samples):
    """The model gets ≥ 14/20 right (measured: 18/20).

    Issue 2 asked that the single defended run keep ≥ 80% of those. Measured with the paper's defence,
    which equals the SPEC §1.3 scikit-image oracle to 6e-7: 13/18 = 72% for every seed tried, and the wavelet
    denoiser alone gives the same 13/18 (deflection alone keeps 18/18). On the first 100 dev images the
    defence keeps 72/90 = 80%, and on all 200 dev images 148/180 = 82% (the next test). The denoiser is not
    weakened to pass a threshold (SPEC §4); this test pins the measured figure with a one-image margin, so a more destructive defence (e.g. a wrong σ unit or threshold)
    fails here and a too-weak one fails the oracle tests of tests/test_denoising.py.
    """
    x, labels = foolbox_samples
    clean = predict_probs(model, x).argmax(1)
    correct = clean == labels
    assert int(correct.sum()) >= 14
    defended = predict_probs(model, defend(model, x[correct], seed=0)).argmax(1)
    kept = int((defended == labels[correct]).sum())
    assert kept >= int(correct.sum()) * 0.66


DEV = Path(__file__).resolve().parents[2] / "shared" / "imagenet-dev"


@pytest.mark.skipif(not (DEV / "labels.csv").is_file(), reason="shared ImageNet dev set not present")
def test_defence_keeps_80_percent_of_clean_predictions_on_the_dev_set(model):
    """Issue 2's ≥ 80% retention on a sample large enough to show it: all 200 dev images, of which
    the model gets 180 right; the single defended run (seed 0) keeps 148 of them (82.2%, Wilson 95%
    [75.9, 87.1]; seeds 1 and 2: 148 and 149). SPEC §4 measured 88% on 51 photos."""
    import csv

    from pd_core.images import load_batch
    from pd_core.maps import robust_activation_map

    with (DEV / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    x = load_batch([DEV / r["file"] for r in rows], spec=model.spec, device=model.device)
    labels = torch.tensor([int(r["class_index"]) for r in rows], device=model.device)
    with torch.no_grad():
        maps = [robust_activation_map(model, chunk) for chunk in x.split(25)]
    rmap = torch.cat([m.rmap for m in maps])
    correct = torch.cat([m.logits for m in maps]).argmax(1) == labels
    assert int(correct.sum()) >= 170  # EfficientNet-Lite0's top-1 here: 180/200
    defended = defend(model, x[correct], rmap=rmap[correct], seed=0)
    kept = int((predict_probs(model, defended, 25).argmax(1) == labels[correct]).sum())
    assert kept >= 0.8 * int(correct.sum())


def test_defend_batch_copies_are_independent_and_image_major(model, foolbox_samples):
    x = foolbox_samples[0][:2]
    copies = defend_batch(model, x, 3, seed=0)
    assert copies.shape == (6, 3, 224, 224)
    assert not torch.equal(copies[0], copies[1])
    # copies of image 0 stay close to image 0, not image 1
    d00 = (copies[0] - x[0]).abs().mean()
    d01 = (copies[0] - x[1]).abs().mean()
    assert d00 < d01


def test_vote_majority_and_tie_break_by_mean_probability():
    probs = torch.zeros(2, 4, 3)
    # image 0: class 1 wins 3 votes to 1
    probs[0, :, 1] = torch.tensor([0.6, 0.6, 0.6, 0.1])
    probs[0, :, 0] = 1 - probs[0, :, 1]
    # image 1: 2 votes each for classes 0 and 2; class 2 has the higher mean probability
    probs[1] = torch.tensor([[0.5, 0.0, 0.5 - 1e-3], [0.6, 0.0, 0.4], [0.1, 0.0, 0.9], [0.1, 0.0, 0.9]])
    result = vote(probs)
    assert result.prediction.tolist() == [1, 2]
    assert result.agreement.tolist() == [0.75, 0.5]


def test_ensemble_predict_votes_over_ten_defended_copies(model, foolbox_samples):
    x = foolbox_samples[0][:2]
    ens = ensemble_predict(model, x, n=10, seed=0)
    assert ens.votes.shape == (2, 10)
    copies = defend_batch(model, x, 10, seed=0)
    manual = vote(predict_probs(model, copies).view(2, 10, -1))
    assert torch.equal(ens.prediction, manual.prediction)
    assert torch.equal(ens.votes, manual.votes)
    again = ensemble_predict(model, x, n=10, seed=0)
    assert torch.equal(ens.mean_probs, again.mean_probs)
