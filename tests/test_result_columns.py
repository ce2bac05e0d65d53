"""Evaluation rows carry the three perturbation measures (issue 13 item 2); older CSVs stay usable."""
from pd_core.evaluation import CSV_COLUMNS, read_results
from pd_core.evaluation.csv_rows import append_rows

OLD_COLUMNS = [c for c in CSV_COLUMNS if c not in ("norm_l2_model", "rmse")]


def row(image, value):
    return {**{c: value for c in CSV_COLUMNS}, "image": image, "attack": "fgsm", "preset": "paper",
            "defence": "none"}


def test_new_files_have_all_three_measures(tmp_path):
    path = tmp_path / "new.csv"
    append_rows(path, [row("a", 0.25)])
    assert path.read_text().splitlines()[0].split(",") == list(CSV_COLUMNS)
    frame = read_results(path)
    assert {"norm_l2", "norm_l2_model", "rmse"} <= set(frame.columns)
    assert frame.loc[0, "norm_l2_model"] == 0.25 and frame.loc[0, "rmse"] == 0.25


def test_an_older_file_reads_with_empty_new_columns_and_appends_stay_aligned(tmp_path):
    path = tmp_path / "old.csv"
    append_rows(path, [row("a", 0.5)])
    lines = path.read_text().splitlines()
    keep = [i for i, c in enumerate(CSV_COLUMNS) if c in OLD_COLUMNS]
    path.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")  # pre-issue-13
    append_rows(path, [row("b", 0.75)])
    lines = path.read_text().splitlines()
    assert all(len(line.split(",")) == len(OLD_COLUMNS) for line in lines)
    frame = read_results(path)
    assert list(frame["image"]) == ["a", "b"] and list(frame["norm_l2"]) == [0.5, 0.75]
    assert frame["norm_l2_model"].isna().all() and frame["rmse"].isna().all()
