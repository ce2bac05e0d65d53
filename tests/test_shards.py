"""The Parquet shard store (pd_core.evaluation.shards) against the single-file CSV store."""
from __future__ import annotations

import math
import random

import pytest

from pd_core.evaluation.shards import (ShardWriter, export_csv, finished_units, read_shards, shard_files)
from pd_core.evaluation.csv_rows import append_rows
from pd_core.evaluation.store import read_results


def _rows(n_images=7):
    """Rows as evaluate() makes them, including a dropped image's clean row (empty cells) and
    a 63-bit seed that float64 could not hold."""
    out = []
    for i in range(n_images):
        image = f"n0144076{i}/ILSVRC2012_val_{i:08d}.JPEG"
        if i == 3:  # misclassified: only its clean, undefended row, attack fields empty
            out.append({"image": image, "label": i, "attack": "clean", "preset": "none", "defence": "none",
                        "prediction": 999, "correct": 0, "norm_l2": 0.0, "linf_255": 0.0, "psnr": math.inf,
                        "seed": (1 << 62) + 12345, "attack_seed": "", "copies": 1, "agreement": 1.0,
                        "single_correct": 0, "attack_success": "", "adv_rank_in_clean_top5": "",
                        "true_rank_in_adv_top5": ""})
            continue
        for attack, preset in (("clean", "none"), ("fgsm", "paper"), ("igsm", "paper")):
            for defence in ("none", "single", "ens10"):
                out.append({"image": image, "label": i, "attack": attack, "preset": preset, "defence": defence,
                            "prediction": (i * 37 + len(defence)) % 1000, "correct": (i + len(attack)) % 2,
                            "norm_l2": 0.0 if attack == "clean" else 0.0123456789 * (i + 1),
                            "linf_255": 0.0 if attack == "clean" else 6.0,
                            "psnr": math.inf if attack == "clean" else 31.41592653 + i,
                            "seed": (1 << 62) + i, "attack_seed": (1 << 61) + i, "copies": 10 if defence == "ens10" else 1,
                            "agreement": 0.7 if defence == "ens10" else 1.0, "single_correct": 1,
                            "attack_success": int(attack != "clean"), "adv_rank_in_clean_top5": 2,
                            "true_rank_in_adv_top5": 0})
    return out


def test_merge_equals_the_single_csv(tmp_path):
    rows = _rows()
    single = tmp_path / "single.csv"
    append_rows(single, sorted(rows, key=lambda r: (r["image"], r["attack"], r["preset"], r["defence"])))

    # The same rows written by three workers in a shuffled order, in several flushes, with one
    # flush written twice (a worker that died after writing and was retried).
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    writers = [ShardWriter(tmp_path / "shards", f"w{k}") for k in range(3)]
    for start in range(0, len(shuffled), 5):
        writers[start % 3].write(shuffled[start:start + 5], [f"unit{start}"])
    writers[1].write(shuffled[:5], ["unit0"])

    merged = read_shards(tmp_path / "shards")
    assert len(merged) == len(rows)
    assert merged["attack_seed"].dropna().min() == (1 << 61)  # exact, not rounded through float64
    exported = tmp_path / "exported.csv"
    assert export_csv(tmp_path / "shards", exported) == len(rows)
    assert exported.read_bytes() == single.read_bytes()
    a, b = read_results(exported), read_results(single)
    assert a.equals(b)
    counts = finished_units(tmp_path / "shards")
    assert counts["unit0"] == 2 and sum(counts.values()) == len(range(0, len(rows), 5)) + 1


def test_atomic_files_only(tmp_path):
    writer = ShardWriter(tmp_path / "s", "w/../x")  # odd worker names stay inside the folder
    writer.write(_rows(1)[:2], ["u1"])
    writer.write([], ["u-empty"])  # a unit with no rows is still recorded as finished
    (tmp_path / "s" / ".tmp-w.x-000009.parquet").write_bytes(b"half a file")  # a write killed midway
    assert [p.parent for p in shard_files(tmp_path / "s")] == [tmp_path / "s"] * 2
    assert set(finished_units(tmp_path / "s")) == {"u1", "u-empty"}
    assert len(read_shards(tmp_path / "s")) == 2
    assert read_shards(tmp_path / "nothing").empty


@pytest.mark.parametrize("n", [0, 1])
def test_export_of_empty_or_tiny_store(tmp_path, n):
    if n:
        ShardWriter(tmp_path / "s").write(_rows(1)[:1], ["u"])
    out = tmp_path / "out.csv"
    assert export_csv(tmp_path / "s", out) == n
    assert len(read_results(out)) == n


def test_tables_read_a_shard_folder(tmp_path):
    """read_results (used by the tables, figures and pages) reads a shard folder as the merged rows."""
    rows = _rows(3)
    ShardWriter(tmp_path / "shards", "w0").write(rows[:10], ["a"])
    ShardWriter(tmp_path / "shards", "w1").write(rows[5:], ["b"])  # overlapping rows: kept once
    frame = read_results(tmp_path / "shards")
    assert len(frame) == len(rows)
    from pd_core.evaluation import summarize

    summary = summarize(frame)
    clean = summary[(summary["attack"] == "clean") & (summary["defence"] == "none")]
    assert int(clean["n"].iloc[0]) == 2  # images 0 and 2: the clean row of image 1 is wrong, so it is dropped
