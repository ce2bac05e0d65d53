"""Each sanity check of pd_core.adaptive.checks warns on a constructed case that should trigger it, and
passes on a healthy one."""
from pd_core.adaptive import checks


def test_reaches_zero():
    assert checks.reaches_zero(0, 100).status == "pass"
    warn = checks.reaches_zero(12, 100)
    assert warn.status == "warn" and warn.numbers["accuracy"] == 0.12 and "does not reach" in warn.message


def test_does_not_rise_with_eps_steps_or_samples():
    assert checks.does_not_rise([1, 2, 4, 8], [60, 40, 10, 0], 100).passed
    # a rise inside the interval (41 after 40 of 100) is noise, not a warning
    assert checks.does_not_rise([1, 2, 4], [60, 40, 41], 100).passed
    warn = checks.does_not_rise([10, 20, 40], [30, 5, 60], 100, setting="steps")
    assert warn.status == "warn" and "steps 20 to 40" in warn.message
    assert warn.numbers["accuracies"] == [0.3, 0.05, 0.6]


def test_iterative_beats_single_step():
    assert checks.iterative_beats_single_step(5, 40, 100).passed
    warn = checks.iterative_beats_single_step(60, 30, 100)
    assert warn.status == "warn" and warn.numbers["single_step_accuracy"] == 0.3


def test_noise_costs_little():
    assert checks.noise_costs_little(90, 88, 10, 100).passed
    too_costly = checks.noise_costs_little(90, 60, 10, 100)
    assert too_costly.status == "warn" and "costs 30.0%" in too_costly.message
    beats_attack = checks.noise_costs_little(90, 85, 87, 100)
    assert beats_attack.status == "warn" and "beats the attack" in beats_attack.message


def test_loss_converged():
    flat_tail = [0.1, 1.0, 2.0, 2.9, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert checks.loss_converged(flat_tail).passed
    climbing = [0.1 * k for k in range(10)]
    warn = checks.loss_converged(climbing)
    assert warn.status == "warn" and abs(warn.numbers["relative_change"] - 5 / 9) < 1e-9
    assert checks.loss_converged([1.0]).status == "warn"


def test_fresh_randomness_agrees():
    assert checks.fresh_randomness_agrees(0.9, 88, 100).passed
    warn = checks.fresh_randomness_agrees(1.0, 40, 100)
    assert warn.status == "warn" and warn.numbers["fresh_success"] == 0.4


def test_every_check_has_a_documented_name():
    made = [checks.reaches_zero(0, 1), checks.does_not_rise([1], [0], 1), checks.iterative_beats_single_step(0, 0, 1),
            checks.noise_costs_little(1, 1, 0, 1), checks.loss_converged([1, 1]),
            checks.fresh_randomness_agrees(0.0, 0, 1)]
    assert tuple(c.name for c in made) == checks.CHECK_NAMES
    assert all(set(c.as_dict()) == {"name", "status", "message", "numbers"} for c in made)
