"""``python -m pd_core attack IMAGE --attack NAME ... --out ADV.png [--json]``.

``--eps`` is given in 1/255 units (``--eps 8`` means 8/255) and applies to the L-infinity attacks
(fgsm, igsm, pgd) only. The image is attacked against ``--label`` if given, otherwise against the
model's own clean prediction (so "success" means the prediction changed). The adversarial image is
written as a lossless 8-bit PNG; ``adversarial_top5`` is computed on that file read back, so it is
exactly what anyone who opens the PNG gets.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .common import CliError, load_image, load_model, parse_param, print_json, top5
from .options import add_options, attack_options

HELP = "attack one image and write the adversarial PNG"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "attack", help=HELP,
        description="Attack one image with one of the paper's attacks (or PGD) and write the adversarial "
                    "image as a lossless PNG. Prints the norms (normalised L2 in pixels and in the model's "
                    "input, RMSE, L-inf in 1/255, PSNR) and the top-5 before and after.")
    add_options(p, attack_options())
    p.set_defaults(func=run)
    return p


def _params(args) -> dict:
    from ..attacks.registry import ATTACKS

    params = dict(parse_param(item) for item in args.param)
    if args.eps is not None:
        if not ATTACKS[args.attack].budgeted:
            raise CliError(f"--eps applies to the L-inf attacks (fgsm, igsm, pgd) only; {args.attack} has "
                           f"no budget (use --preset or --param)")
        if not 1 <= args.eps <= 255:
            raise CliError(f"--eps is in 1/255 units and must be between 1 and 255, got {args.eps:g}")
        params["eps"] = args.eps / 255
    return params


def _checked_out(args) -> Path:
    if args.label is not None and not 0 <= args.label < 1000:
        raise CliError(f"--label must be an ImageNet class index between 0 and 999, got {args.label}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise CliError(f"--out must be a .png file (lossless), got {args.out}")
    if not out.parent.is_dir():
        raise CliError(f"the folder of --out does not exist: {out.parent}")
    return out


def run(args) -> int:
    """Attack, write the PNG, print the record; bad input raises :class:`CliError` (exit 2)."""
    import torch

    from ..attacks import attack
    from ..images import ImageError, open_image, pil_to_tensor, to_png_bytes

    params = _params(args)
    out = _checked_out(args)
    model = load_model(args.model)
    x = load_image(args.image, model)
    with torch.no_grad():
        clean_probs = model(x).softmax(-1)[0]
    label = int(clean_probs.argmax()) if args.label is None else args.label
    try:
        result = attack(model, x, torch.tensor([label]), args.attack, preset=args.preset, seed=args.seed,
                        **params)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        out.write_bytes(to_png_bytes(result.adversarial[0]))
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    try:
        saved = pil_to_tensor(open_image(str(out)), device=model.device)
    except ImageError as exc:
        raise CliError(f"the written PNG cannot be read back: {exc}") from None
    with torch.no_grad():
        adv_probs = model(saved).softmax(-1)[0]
    adv_top1 = int(adv_probs.argmax())
    success = adv_top1 == int(result.targets[0]) if result.targets is not None else adv_top1 != label
    psnr = float(result.psnr[0])
    record = {
        "image": args.image, "attack": args.attack, "success": bool(success),
        "norm_l2": float(result.norm_l2[0]), "norm_l2_model": float(result.norm_l2_model[0]),
        "rmse": float(result.rmse[0]), "linf_255": float(result.linf_255[0]),
        "psnr": psnr if math.isfinite(psnr) else None, "seconds": round(result.seconds, 4),
        "clean_top5": top5(clean_probs), "adversarial_top5": top5(adv_probs),
        "model": model.name, "preset": args.preset, "params": result.params, "seed": args.seed,
        "label": label, "target": int(result.targets[0]) if result.targets is not None else None,
        "out": str(out),
    }
    if args.json:
        print_json(record)
    else:
        _print(record)
    return 0


def _print(r: dict) -> None:
    from ..attacks.registry import ATTACKS

    c, a = r["clean_top5"][0], r["adversarial_top5"][0]
    print(f"{r['image']}  ({r['model']})")
    print(f"  attack:      {ATTACKS[r['attack']].title}, preset {r['preset']}, seed {r['seed']}")
    print(f"  parameters:  {r['params']}")
    print(f"  clean:       {c['index']} {c['label']} ({c['prob']:.1%})")
    print(f"  adversarial: {a['index']} {a['label']} ({a['prob']:.1%})"
          + (f"  [target {r['target']}]" if r["target"] is not None else ""))
    psnr = "inf" if r["psnr"] is None else f"{r['psnr']:.1f} dB"
    print(f"  success:     {'yes' if r['success'] else 'no'}   |L2| {r['norm_l2']:.4f} "
          f"(model input {r['norm_l2_model']:.4f})   RMSE {r['rmse']:.4f}   "
          f"L-inf {r['linf_255']:.1f}/255   PSNR {psnr}   {r['seconds']:.2f} s")
    print(f"  wrote {r['out']}")
