"""Sanity checks of an adaptive evaluation (issue 14 item 3), each reported as pass or warn with its numbers.

An evaluation that looks robust is more often a weak attack than a strong defence. These are the
checks of Carlini et al. 2019 ("On Evaluating Adversarial Robustness", §5 checklist) and Tramèr et
al. 2020 ("On Adaptive Attacks to Adversarial Example Defenses", §3), in the spirit of AutoAttack's
flags for randomised defences (Croce & Hein 2020, §4):

- :func:`reaches_zero`: with a large budget (32/255) accuracy should be about 0%; an unbounded
  attack that cannot fool the model means the attack, not the defence, is broken;
- :func:`does_not_rise`: accuracy should not rise with ε, steps or EOT samples beyond the
  confidence interval (more power can only help the attacker);
- :func:`iterative_beats_single_step`: the iterative attack is at least as strong as one step;
- :func:`noise_costs_little`: random noise of the same L∞ size costs little accuracy and is
  never stronger than the attack (otherwise the gradient misleads the attack);
- :func:`loss_converged`: the attack loss changes little over its last steps (more steps would not help);
- :func:`fresh_randomness_agrees`: the attack's own success estimate (its EOT samples) agrees
  with an evaluation on fresh randomness (a gap means the attack overfits its samples).

Every check returns a :class:`Check`; accuracies are fractions in [0, 1] with n images, intervals
are Wilson 95% (:func:`pd_core.evaluation.stats.wilson_interval`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from ..evaluation.stats import wilson_interval
from .settings import budget_title

__all__ = ["Check", "reaches_zero", "does_not_rise", "iterative_beats_single_step", "noise_costs_little",
           "loss_converged", "fresh_randomness_agrees", "CHECK_NAMES"]

CHECK_NAMES = ("reaches_zero", "does_not_rise", "iterative_beats_single_step", "noise_costs_little",
               "loss_converged", "fresh_randomness_agrees")


@dataclass(frozen=True)
class Check:
    """One sanity check: ``status`` is ``"pass"`` or ``"warn"``; ``numbers`` the values it judged;
    ``message`` one plain sentence saying what was found."""

    name: str
    status: str
    message: str
    numbers: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict:
        return asdict(self)


def _check(name: str, ok: bool, message: str, **numbers) -> Check:
    return Check(name, "pass" if ok else "warn", message, numbers)


def reaches_zero(correct: int, n: int, eps_255: float = 32.0, max_accuracy: float = 0.02, norm: str = "linf"
                 ) -> Check:
    """Accuracy at a large budget (``eps_255``, default 32/255; for ``norm="l2"`` a normalised L2)
    is at most ``max_accuracy``."""
    accuracy = correct / n if n else float("nan")
    ok = n > 0 and accuracy <= max_accuracy
    verdict = "reaches" if ok else "does not reach"
    return _check("reaches_zero", ok, f"at {budget_title(eps_255, norm)} the attack leaves {accuracy:.1%} accuracy: it "
                  f"{verdict} about 0% (limit {max_accuracy:.0%}).",
                  eps_255=eps_255, correct=correct, n=n, accuracy=accuracy, max_accuracy=max_accuracy)


def does_not_rise(settings: Sequence[float], corrects: Sequence[int], n: int, setting: str = "eps_255") -> Check:
    """Accuracy does not rise with the attack's power: for every pair of settings a < b, the accuracy
    at b is not above the upper end of a's 95% interval. ``setting`` names what varies (ε in /255,
    steps or EOT samples)."""
    order = sorted(range(len(settings)), key=lambda i: settings[i])
    worst = None
    for pos, i in enumerate(order):
        high = wilson_interval(corrects[i], n)[1]
        for j in order[pos + 1:]:
            if settings[j] > settings[i] and corrects[j] / n > high:
                rise = corrects[j] / n - corrects[i] / n
                if worst is None or rise > worst[2]:
                    worst = (settings[i], settings[j], rise)
    numbers = dict(setting=setting, settings=list(settings), accuracies=[c / n for c in corrects], n=n)
    if worst is None:
        return _check("does_not_rise", True, f"accuracy does not rise with {setting} beyond its interval.", **numbers)
    return _check("does_not_rise", False, f"accuracy rises by {worst[2]:.1%} from {setting} {worst[0]:g} to "
                  f"{worst[1]:g}, beyond the 95% interval: the stronger attack is weaker.", **numbers)


def iterative_beats_single_step(iterative_correct: int, single_step_correct: int, n: int) -> Check:
    """The iterative attack leaves no more accuracy than the single-step one (within its interval)."""
    high = wilson_interval(single_step_correct, n)[1]
    iterative, single = iterative_correct / n, single_step_correct / n
    ok = iterative <= high
    message = (f"iterative attack {iterative:.1%} vs single step {single:.1%}: "
               + ("at least as strong." if ok else "the single step is stronger, so the iterations are misled."))
    return _check("iterative_beats_single_step", ok, message, iterative_accuracy=iterative,
                  single_step_accuracy=single, n=n)


def noise_costs_little(clean_correct: int, noise_correct: int, attack_correct: int, n: int,
                       max_drop: float = 0.10) -> Check:
    """Uniform random noise of the attack's L∞ size lowers accuracy by at most ``max_drop`` and is
    not stronger than the attack."""
    clean, noise, attack = clean_correct / n, noise_correct / n, attack_correct / n
    drop = clean - noise
    problems = []
    if drop > max_drop:
        problems.append(f"random noise costs {drop:.1%} (more than {max_drop:.0%})")
    if noise < attack:
        problems.append(f"random noise ({noise:.1%}) beats the attack ({attack:.1%})")
    message = "; ".join(problems) + "." if problems else f"random noise costs {drop:.1%}, less than the attack."
    return _check("noise_costs_little", not problems, message, clean_accuracy=clean, noise_accuracy=noise,
                  attack_accuracy=attack, drop=drop, max_drop=max_drop, n=n)


def loss_converged(loss_history: Sequence[float], window: int = 5, tolerance: float = 0.02) -> Check:
    """The attack loss changed by at most ``tolerance`` (relative to its range over the run) across
    the last ``window`` steps."""
    values = [float(v) for v in loss_history]
    if len(values) < 2:
        return _check("loss_converged", False, "fewer than two steps: convergence cannot be judged.",
                      steps=len(values))
    tail = values[-(window + 1):]
    span = max(values) - min(values)
    change = abs(tail[-1] - tail[0])
    relative = change / span if span > 0 else 0.0
    ok = relative <= tolerance
    message = (f"the loss moved {relative:.1%} of its range over the last {len(tail) - 1} steps"
               + (": converged." if ok else ": still climbing, more steps would help the attack."))
    return _check("loss_converged", ok, message, relative_change=relative, tolerance=tolerance,
                  last_losses=tail, steps=len(values))


def fresh_randomness_agrees(attack_estimate: float, fresh_successes: int, n: int, slack: float = 0.05) -> Check:
    """The attack's own success estimate (fraction of its EOT samples fooled) lies within the 95%
    interval of the success rate on fresh randomness, widened by ``slack``."""
    low, high = wilson_interval(fresh_successes, n)
    fresh = fresh_successes / n
    ok = low - slack <= attack_estimate <= high + slack
    message = (f"the attack estimated {attack_estimate:.1%} success, fresh randomness gives {fresh:.1%} "
               f"[{low:.1%}, {high:.1%}]" + (": they agree." if ok else ": they disagree."))
    return _check("fresh_randomness_agrees", ok, message, attack_estimate=attack_estimate,
                  fresh_success=fresh, ci_low=low, ci_high=high, slack=slack, n=n)
