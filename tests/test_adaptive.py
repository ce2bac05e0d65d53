"""The adaptive attack (BPDA + EOT, SPEC §3) on the embedded classifier, kept fast: two Foolbox
sample photos, a few steps, few EOT samples."""
import csv

import pytest
import torch
import torch.nn.functional as F

from gallery_cases import labelled_folder
from pd_core.adaptive import ADAPTIVE_CSV_COLUMNS, PgdSettings, RunHooks, bpda, bpda_eot_attack, bpda_eot_gradient
from pd_core.attacks.measures import quantize_to_grid
from pd_core.defence import DefenceConfig, defend, defend_batch
from pd_core.randomness import make_generator

EPS = 4 / 255


@pytest.fixture(scope="module")
def pair(model):
    """Two Foolbox ImageNet samples the undefended model classifies correctly."""
    from pd_core.images import gallery, load_batch

    items = [g for g in gallery() if g.path.name.startswith("imagenet_")]
    x = load_batch([g.path for g in items[:6]], spec=model.spec, device=model.device)
    labels = torch.tensor([g.label_index for g in items[:6]])
    with torch.no_grad():
        ok = (model(x).argmax(1) == labels).nonzero()[:, 0][:2]
    assert len(ok) == 2
    return x[ok], labels[ok]


@pytest.fixture(scope="module")
def untargeted(model, pair):
    x, y = pair
    calls = []
    result = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, steps=5, eot=2), seed=0,
                             hooks=RunHooks(progress=lambda frac, msg: calls.append(frac)))
    return result, calls


def test_bpda_gradient_is_the_model_gradient_at_the_defended_input(model, pair):
    x, y = pair
    grad, loss, votes = bpda_eot_gradient(model, x, y, eot=3, seed=7)
    # Oracle: the same defence samples (same seed), the classifier differentiated at them.
    z = defend_batch(model, x, 3, seed=7).requires_grad_(True)
    ce = F.cross_entropy(model(z), y.repeat_interleave(3), reduction="none").view(2, 3).mean(1)
    (gz,) = torch.autograd.grad(ce.sum(), z)
    expected = gz.view(2, 3, *x.shape[1:]).sum(1)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-9)
    assert torch.allclose(loss, ce.detach(), rtol=1e-5)
    # It is not the gradient at the undefended image: the defence changes where it is evaluated.
    xc = x.clone().requires_grad_(True)
    (g_clean,) = torch.autograd.grad(F.cross_entropy(model(xc), y, reduction="sum"), xc)
    cosine = F.cosine_similarity(grad.flatten(1), g_clean.flatten(1), dim=1)
    assert bool((cosine < 0.99).all())


def test_bpda_forward_is_the_defence_and_backward_the_identity():
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    d = torch.rand(1, 3, 4, 4)
    out = bpda(x, d)
    assert torch.equal(out, d)
    weight = torch.randn(1, 3, 4, 4)
    (g,) = torch.autograd.grad((out * weight).sum(), x)
    assert torch.equal(g, weight)


def test_attack_losses_on_known_logits():
    from pd_core.adaptive.gradients import attack_loss

    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]])
    labels = torch.tensor([0, 2])
    ce = -torch.log_softmax(logits, 1)[[0, 1], [0, 2]]
    assert torch.allclose(attack_loss(logits, labels, False, "ce"), ce)
    assert torch.allclose(attack_loss(logits, labels, True, "ce"), -ce)
    # margin: best other logit minus the label's (untargeted), target's minus best other (targeted)
    assert torch.equal(attack_loss(logits, labels, False, "margin"), torch.tensor([2.0, -4.0]))
    assert torch.equal(attack_loss(logits, torch.tensor([2, 1]), True, "margin"), torch.tensor([-1.0, -5.0]))
    with pytest.raises(ValueError, match="loss"):
        attack_loss(logits, labels, False, "hinge")


def test_eot_one_reproduces_plain_bpda(model, pair):
    x, y = pair
    alpha, steps, seed = 1.5 / 255, 3, 11
    result = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, step_size=alpha, steps=steps, eot=1,
                                                             quantize=False), seed=seed)
    # Plain BPDA written out: one defence sample per step from one seeded generator.
    gen = make_generator(seed)
    adv = x.clone()
    for _ in range(steps):
        d = defend(model, adv, DefenceConfig(), generator=gen).requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(d), y, reduction="sum"), d)
        adv = torch.min(torch.max(adv + alpha * g.sign(), (x - EPS).clamp(0, 1)), (x + EPS).clamp(0, 1))
    assert torch.equal(result.adversarial, adv)


def test_attack_takes_its_gradient_estimator_as_a_parameter(model, pair, untargeted):
    from pd_core.adaptive import BpdaEotGradient

    x, y = pair
    result, _ = untargeted
    same = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, steps=5, eot=2), seed=0,
                           gradient=BpdaEotGradient(eot=2))
    assert torch.equal(same.adversarial, result.adversarial)
    assert same.loss_history == result.loss_history
    # Any estimator plugs in: one that always points up drives every pixel to the top of the ε-ball.
    calls = []

    def upward(model_, images, goal, *, targeted, generator):
        calls.append((images.shape[0], targeted, isinstance(generator, torch.Generator)))
        return torch.ones_like(images), torch.full((images.shape[0],), 7.0), goal[:, None].clone()

    pushed = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, steps=3, eot=1, quantize=False), seed=0,
                             gradient=upward)
    assert calls == [(2, False, True)] * 3
    assert torch.equal(pushed.adversarial, (x + EPS).clamp(max=1))
    assert pushed.loss_history == [7.0, 7.0, 7.0]
    assert torch.equal(pushed.eot_fooled, torch.zeros(2))  # every vote was the true class


def test_attack_respects_eps_on_the_png_grid_and_fools_the_defence(model, pair, untargeted):
    x, y = pair
    result, calls = untargeted
    adv = result.adversarial
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    # PNG-safe: multiples of 1/255, and within ε in whole 8-bit levels.
    levels = adv * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert int((levels.round() - (x * 255).round()).abs().max()) <= 4
    assert torch.allclose(result.linf, (adv - x).abs().flatten(1).amax(1))
    # The attack ascends the loss and defeats the defence on these easy photos (Athalye & Carlini).
    assert result.loss_history[-1] > result.loss_history[0] + 1.0
    assert bool(result.success.all())
    assert torch.equal(result.success, result.defended_pred != y)
    assert result.steps_done == 5 and not result.stopped
    assert calls == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_attack_leaves_the_model_and_the_input_untouched(model, pair, untargeted):
    x, _ = pair
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert not x.requires_grad and x.grad is None


def test_targeted_mode_reaches_an_easy_target(model, pair):
    x, y = pair
    with torch.no_grad():
        second = model(x).topk(2, dim=1).indices[:, 1]  # the runner-up class: an easy target
    result = bpda_eot_attack(model, x, y, None, PgdSettings(eps=8 / 255, steps=5, eot=2, targeted=True), target=second,
                             seed=1)
    assert torch.equal(result.targets, second)
    assert torch.equal(result.defended_pred, second)
    assert bool(result.success.all())
    assert result.loss_history[-1] > result.loss_history[0]  # −CE of the target rises


def test_default_targets_are_seeded_wrong_classes(model, pair):
    x, y = pair
    a = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, steps=0, targeted=True), seed=3)
    b = bpda_eot_attack(model, x, y, None, PgdSettings(eps=EPS, steps=0, targeted=True), seed=3)
    assert torch.equal(a.targets, b.targets) and bool((a.targets != y).all())
    assert torch.equal(a.adversarial, x)  # no step: the clean image


def test_should_stop_returns_the_current_iterate(model, pair):
    x, y = pair
    calls = []
    result = bpda_eot_attack(model, x[:1], y[:1], None, PgdSettings(eps=EPS, steps=10, eot=1),
                             hooks=RunHooks(lambda f, m: calls.append(f), lambda: len(calls) >= 1))
    assert result.stopped and result.steps_done == 1
    assert float((result.adversarial - x[:1]).abs().max()) <= EPS + 1e-6


def test_quantize_to_grid_keeps_the_ball_for_any_eps():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2000, generator=gen)  # off the 8-bit grid
    adv = (clean + (torch.rand(2000, generator=gen) * 2 - 1) * 0.05).clamp(0, 1)
    for eps in (0.3 / 255, 1 / 255, 4 / 255):
        q = quantize_to_grid(adv, clean, eps)
        assert float((q - clean).abs().max()) <= eps + 1e-4 / 255  # the documented float slack
        assert q.min() >= 0 and q.max() <= 1
        on_grid = torch.isclose(q * 255, (q * 255).round(), atol=1e-4)
        if eps >= 0.5 / 255:
            assert bool(on_grid.all())  # every interval of width 2ε ≥ 1/255 holds a grid point
        else:
            assert bool((on_grid | (q == clean)).all())
    grid_clean = torch.round(clean * 255) / 255
    q = quantize_to_grid(grid_clean + 0.011, grid_clean, 2 / 255)
    assert torch.allclose(q, (grid_clean + 2 / 255).clamp(max=1), atol=1e-6)  # 0.011 ≈ 2.8/255 clipped to 2
    # Photos are on the grid and presets store budgets rounded (6/255 as 0.02352941): the whole
    # budget must stay usable, not one step less (a float64 rewrite once lost it for most pixels).
    for steps in (1, 4, 6, 8, 15):
        eps = round(steps / 255, 8)
        q = quantize_to_grid((grid_clean + 0.1).clamp(max=1), grid_clean, eps)
        assert torch.allclose(q, (grid_clean + steps / 255).clamp(max=1), atol=1e-6), steps
        q = quantize_to_grid((grid_clean - 0.1).clamp(min=0), grid_clean, eps)
        assert torch.allclose(q, (grid_clean - steps / 255).clamp(min=0), atol=1e-6), steps


def test_bad_parameters_are_plain_errors(model, pair):
    x, y = pair
    with pytest.raises(ValueError, match="eps"):
        PgdSettings(eps=2.0)
    with pytest.raises(ValueError, match="eot"):
        PgdSettings(eot=0)
    with pytest.raises(ValueError, match="norm"):
        PgdSettings(norm="l1")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bpda_eot_attack(model, x[:, :1], y)


def test_command_line_writes_accuracy_against_eps(model, tmp_path, capsys):
    """End to end on a two-image folder: one row per (ε, defence), intervals around the accuracy."""
    from pd_core.cli import main

    folder = labelled_folder(tmp_path)
    out = tmp_path / "adaptive.csv"
    code = main(["adaptive", "--images", str(folder), "--eps", "4", "--eot", "1", "--steps", "2",
                 "--ensemble", "2", "--tuning-fraction", "0", "--no-progress", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "none" in printed and "single" in printed and "ens2" in printed
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ADAPTIVE_CSV_COLUMNS
    assert [(float(r["eps_255"]), r["defence"]) for r in rows] == [
        (0.0, "none"), (0.0, "single"), (0.0, "ens2"), (4.0, "none"), (4.0, "single"), (4.0, "ens2")]
    for r in rows:
        n, correct = int(r["n"]), int(r["correct"])
        assert float(r["accuracy"]) == pytest.approx(correct / n)
        assert float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"])
    assert float(rows[0]["accuracy"]) == 1.0  # only correctly classified images count
    assert float(rows[3]["mean_linf_255"]) <= 4 + 1e-3
    assert main(["adaptive", "--images", str(folder), "--eps", "four", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err

    # The app reads the same file back and draws one line per defence with its intervals.
    from pd_core.adaptive import accuracy_curve_figure, read_adaptive_csv

    back = read_adaptive_csv(out)
    assert [(r["eps_255"], r["defence"], r["accuracy"]) for r in back] == [
        (float(r["eps_255"]), r["defence"], float(r["accuracy"])) for r in rows]
    fig = accuracy_curve_figure(back)
    assert [t.name for t in fig.data] == ["no defence", "defended, one run", "ens2"]
    single = fig.data[1]
    assert list(single.x) == [0.0, 4.0]
    assert single.error_y.array[0] + single.y[0] == pytest.approx(100 * back[1]["ci_high"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an adaptive-attack results file"):
        read_adaptive_csv(bad)
