"""EOT on the exact gradient (pd_core.adaptive.exact) against BPDA+EOT, same samples, budget and seed."""
import pytest
import torch
from gallery_cases import correct_foolbox_photos

from pd_core.adaptive import PgdSettings, bpda_eot_attack, bpda_eot_gradient
from pd_core.adaptive.exact import ExactEotGradient, exact_eot_gradient
from pd_core.defence import apply_draws, defend_batch, defend_differentiable, sample_draws
from pd_core.randomness import make_generator


@pytest.fixture(scope="module")
def gallery_images(model):
    """Four Foolbox gallery photos the undefended model classifies correctly."""
    return correct_foolbox_photos(model, 4, among=8)


def test_sampled_draws_replay_defend_batch(model, gallery_images):
    x, _ = gallery_images
    record = sample_draws(model, x, 3, generator=make_generator(5))
    replayed = apply_draws(x.repeat_interleave(3, dim=0), record)
    assert torch.equal(replayed, defend_batch(model, x, 3, generator=make_generator(5)))
    # a chunk of rows replays those rows
    assert torch.equal(apply_draws(x[1:2].repeat_interleave(3, dim=0), record.rows(slice(3, 6))), replayed[3:6])


def test_exact_estimator_sees_bpdas_samples_and_differentiates_them(model, gallery_images):
    x, y = gallery_images
    g_bpda, loss_bpda, votes_bpda = bpda_eot_gradient(model, x, y, 2, generator=make_generator(0))
    g_exact, loss_exact, votes_exact = exact_eot_gradient(model, x, y, 2, generator=make_generator(0), batch_size=4)
    assert torch.equal(votes_exact, votes_bpda)
    assert torch.allclose(loss_exact, loss_bpda, atol=1e-5, rtol=0)
    # The exact gradient is the autograd gradient of the same samples, and not BPDA's identity.
    xr = x.clone().requires_grad_(True)
    defended = defend_differentiable(model, xr, copies=2, generator=make_generator(0)).defended
    ce = torch.nn.functional.cross_entropy(model(defended), y.repeat_interleave(2), reduction="none")
    (reference,) = torch.autograd.grad(ce.view(4, 2).mean(1).sum(), xr)
    assert torch.allclose(g_exact, reference, atol=1e-6, rtol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(g_exact.flatten(1), g_bpda.flatten(1))
    assert (cosine < 0.95).all()
    assert all(p.grad is None for p in model.parameters())


def test_exact_attack_is_at_least_as_strong_as_bpda(model, gallery_images):
    """Same images, ε, steps, EOT samples and seed: the exact gradient fools the defence at least as
    often as BPDA and climbs the attack loss higher."""
    x, y = gallery_images
    settings = PgdSettings(eps=0.5 / 255, steps=4, eot=2)
    bpda_run = bpda_eot_attack(model, x, y, None, settings, seed=0)
    exact_run = bpda_eot_attack(model, x, y, None, settings, seed=0, gradient=ExactEotGradient(eot=2))
    assert exact_run.success_rate >= bpda_run.success_rate
    assert exact_run.loss_history[-1] > bpda_run.loss_history[-1]
    assert float(exact_run.linf.max()) <= 0.5 / 255 + 1e-7


def test_map_gradient_adds_the_score_function_term(model, gallery_images):
    x, y = gallery_images[0][:2], gallery_images[1][:2]
    plain = exact_eot_gradient(model, x, y, 3, generator=make_generator(1))
    with_map = exact_eot_gradient(model, x, y, 3, generator=make_generator(1), map_gradient=True)
    assert torch.equal(with_map[2], plain[2]) and torch.allclose(with_map[1], plain[1], atol=1e-6, rtol=0)
    # the added term, computed independently through defend_differentiable's log-probability
    xr = x.clone().requires_grad_(True)
    out = defend_differentiable(model, xr, copies=3, generator=make_generator(1), map_gradient=True)
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(model(out.defended), y.repeat_interleave(3), reduction="none")
    losses = losses.view(2, 3)
    centred = losses - (losses.sum(1, keepdim=True) - losses) / 2
    (term,) = torch.autograd.grad((centred * out.log_prob.view(2, 3)).mean(1).sum(), xr)
    assert term.abs().sum() > 0
    assert torch.allclose(with_map[0] - plain[0], term, atol=1e-6, rtol=1e-3)
