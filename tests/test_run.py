"""``wsk run`` on your data: a VOC folder and its renamed, nested labels-file copy give the same work
directory and the same printout; ``WORK/run.json`` refuses a second recipe; the stage commands,
``wsk run`` and Beam all run the stages of ``wsk.stage_list.STAGES``."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from wsk.cli.main import cli

RUN = ["--recipe", "tiny", "--variants", "AN_B,SN_B", "--jobs", "1"]


def _nested_name(index, image_id):
    """Another name in nested folders, with spaces and non-ASCII, for image ``index``."""
    return f"photos/set {index % 3}/é{index % 2}/image {image_id} ü.jpg"


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """A synthetic VOC folder and a labels-file copy of it (``{voc id: labels-file id}``)."""
    from wsk.data.synthetic import generate_dataset
    from wsk.data.voc import PAPER_TRAIN, VOCDataset

    base = tmp_path_factory.mktemp("datasets")
    voc = base / "voc"
    generate_dataset(voc, num_images=24, size=48, seed=3)
    shutil.rmtree(voc / "SegmentationObject")   # a labels file has class masks only: count objects alike
    copy = base / "mine"
    rows, mapping = [], {}
    for split in (PAPER_TRAIN, "val"):
        dataset = VOCDataset(voc, split)
        for image_id in dataset.ids:
            name = _nested_name(len(rows), image_id)
            mask = name[:-4] + " mask.png"
            os.makedirs(copy / os.path.dirname(name), exist_ok=True)
            shutil.copyfile(dataset.image_path(image_id), copy / name)
            shutil.copyfile(dataset.mask_path(image_id), copy / mask)
            labels = ";".join(dataset.class_names[k] for k in dataset.labels(image_id))
            rows.append({"image": name, "labels": labels, "split": "train" if split == PAPER_TRAIN else "val",
                         "mask": mask})
            mapping[image_id] = name[:-4]
    with open(copy / "tags.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "labels", "split", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return voc, copy / "tags.csv", mapping


@pytest.fixture(scope="module")
def two_runs(two_datasets, tmp_path_factory):
    voc, tags, mapping = two_datasets
    works, outputs = {}, {}
    # the VOC folder's class order (classes.txt), which a labels file otherwise sorts
    for name, data in (("voc", [str(voc)]), ("labels", [str(tags), "--classes", str(voc / "classes.txt")])):
        works[name] = tmp_path_factory.mktemp(f"work-{name}")
        result = CliRunner().invoke(cli, ["run"] + data + [str(works[name])] + RUN)
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    return works, outputs, mapping


def _arrays(path, skip=("made_from", "inputs", "scores_digest")):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k not in skip}


def _same_arrays(a, b):
    left, right = _arrays(a), _arrays(b)
    assert sorted(left) == sorted(right), (a, b)
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=f"{a} {key}")


def _table(output):
    """The printed report (quality report, pseudo-labels, Table 1) without its heading, which names
    the split, and without the stage times."""
    text = output.split("\nstage ")[0]
    return text[text.index("Quality of each stage"):].split("\n", 1)[1]


def test_labels_file_copy_gives_the_same_work_directory_and_table(two_runs):
    from wsk.io import read_label_png
    from wsk.models.saving import load_model

    works, outputs, mapping = two_runs
    a, b = works["voc"], works["labels"]
    assert len(mapping) == 24
    compared = []
    for voc_id, other in mapping.items():
        for folder in ("proposals", "scores", "locmaps"):
            if (a / folder / f"{voc_id}.npz").exists():   # training images only
                _same_arrays(a / folder / f"{voc_id}.npz", b / folder / f"{other}.npz")
        if (a / "refined" / f"{voc_id}.json").exists():   # training images only
            left, right = (json.loads((w / "refined" / f"{i}.json").read_text()) for w, i in ((a, voc_id), (b, other)))
            assert (left["kept"], left["fallback"]) == (right["kept"], right["fallback"])
            compared.append(voc_id)
        if (a / "masks" / f"{voc_id}.png").exists():
            np.testing.assert_array_equal(read_label_png(a / "masks" / f"{voc_id}.png"),
                                          read_label_png(b / "masks" / f"{other}.png"))
    assert len(compared) == 18    # the 18 training images (paper_train), each compared
    _same_arrays(a / "refinement.npz", b / "refinement.npz")
    for model in ("hcp/hcp.keras", "seg/AN_B/model.keras", "seg/SN_B/model.keras"):
        for left, right in zip(load_model(a / model).get_weights(), load_model(b / model).get_weights()):
            np.testing.assert_array_equal(left, right)
    assert _table(outputs["voc"]) == _table(outputs["labels"])
    assert "val: AN_B" in outputs["voc"] and "pseudo-labels: rough masks" in outputs["voc"]
    assert (a / "export").is_dir() and "wsk zoo add" in outputs["voc"]


def test_run_json_records_the_run_and_a_second_recipe_is_refused(two_runs, two_datasets):
    from wsk.recipes import get_recipe
    from wsk.run_record import open_run, recipe_to_json

    works, _, _ = two_runs
    voc, tags, _ = two_datasets
    record = json.loads((works["labels"] / "run.json").read_text())
    assert record["dataset"] == {"kind": "labels", "path": str(tags), "classes": str(voc / "classes.txt")}
    assert record["split"] == "train" and record["val_split"] == "val"
    assert record["classes"][0] == "background" and len(record["classes"]) == 6
    assert {k: record["recipe"][k] for k in ("hcp", "seg", "pseudo")} == {
        k: recipe_to_json(get_recipe("tiny"))[k] for k in ("hcp", "seg", "pseudo")}
    assert record["commands"][0]["command"] == "wsk run" and record["commands"][0]["params"]["variants"] == str(
        ("AN_B", "SN_B"))

    result = CliRunner().invoke(cli, ["pseudo", str(tags), str(works["labels"]), "--recipe", "paper"])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {works['labels'] / 'run.json'}: recipe.") and "'tiny'" in line
    result = CliRunner().invoke(cli, ["pseudo", str(voc), str(works["labels"])])
    assert result.exit_code == 1 and "dataset.kind is 'labels' here, not 'voc'" in result.output
    assert "run.json" in result.output
    result = CliRunner().invoke(cli, ["pseudo", str(tags), str(works["labels"]), "--refine-order", "farthest"])
    assert result.exit_code == 1 and "recipe.pseudo.refine_order is 'contrast'" in result.output
    # no flag: the recorded recipe, whose values win over the name's definition today
    run = open_run(works["labels"], tags, write=False)
    assert run.recipe == get_recipe("tiny") and run.split == "train"


def test_a_dataset_inside_the_work_directory_is_recorded_relative_and_found_after_a_move(two_datasets, tmp_path):
    """run.json names a dataset inside WORK relative to it ("data"), so a moved WORK reads its own
    copy; a dataset outside WORK stays absolute."""
    from wsk.run_record import open_run

    voc, tags, _ = two_datasets
    work = tmp_path / "work"
    shutil.copytree(voc, work / "data")
    open_run(work, work / "data", recipe="tiny")
    assert json.loads((work / "run.json").read_text())["dataset"] == {"kind": "voc", "path": "data"}
    shutil.move(work, tmp_path / "moved")
    run = open_run(tmp_path / "moved", tmp_path / "moved" / "data", write=False)
    assert run.source.path == str(tmp_path / "moved" / "data")
    open_run(tmp_path / "outside", tags, recipe="tiny")
    assert json.loads((tmp_path / "outside" / "run.json").read_text())["dataset"]["path"] == str(tags)


def test_every_runner_takes_its_stages_from_the_one_list(two_runs, two_datasets, monkeypatch):
    """Replace the rough-mask entry of STAGES: `wsk run`, `wsk pseudo` and the Beam pipeline all call it."""
    import dataclasses

    import wsk.stage_list as stage_list
    from wsk.driver import run_all
    from wsk.run_record import open_run

    works, _, _ = two_runs
    voc, _, _ = two_datasets
    work = works["voc"]
    calls = []
    original = stage_list.get_stage("rough masks")

    def recorded(run, resource, image_id):
        calls.append(image_id)
        original.per_image(run, resource, image_id)

    patched = tuple(dataclasses.replace(s, per_image=recorded) if s.name == "rough masks" else s
                    for s in stage_list.STAGES)
    monkeypatch.setattr(stage_list, "STAGES", patched)
    run = open_run(work, voc, write=False, jobs=1)
    ids = run.dataset().ids

    def remove_masks():
        shutil.rmtree(work / "masks")
        calls.clear()

    remove_masks()
    run_all(run, until="rough masks", printer=lambda *_: None)
    assert sorted(calls) == sorted(ids)
    remove_masks()
    result = CliRunner().invoke(cli, ["pseudo", str(voc), str(work), "--jobs", "1", "--no-report"])
    assert result.exit_code == 0, result.output
    assert sorted(calls) == sorted(ids)
    pytest.importorskip("apache_beam")
    from wsk.pipeline import run_pipeline, selected_stages

    assert [s.name for s in selected_stages("all")] == [s.name for s in stage_list.STAGES if s.per_image]
    remove_masks()
    run_pipeline(run, stages="pseudo")
    assert sorted(calls) == sorted(ids)


def test_bad_rows_are_listed_one_line_each_and_work_stays_empty(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 6)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 6)).save(tmp_path / "b.jpg")
    Image.new("RGB", (8, 6)).save(tmp_path / "c.jpg")
    Image.new("L", (5, 5)).save(tmp_path / "small.png")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    rows = ["image,labels,split,mask",
            "a.jpg,dragon,train,",        # 2: unknown class
            "missing.jpg,cat,train,",     # 3: missing image
            "a.jpg,dog,train,",           # 4: duplicate image (of row 2)
            "b.jpg,,train,",              # 5: empty labels cell
            "c.jpg,cat,val,small.png"]    # 6: mask of another size
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    work = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "tags.csv"), str(work), "--classes",
                                      str(tmp_path / "classes.txt")])
    assert result.exit_code == 1
    lines = [l for l in result.output.splitlines() if l.strip()]
    path = str(tmp_path / "tags.csv")
    assert [re.match(rf"^{re.escape(path)}:(\d+): ", l).group(1) for l in lines] == ["2", "3", "4", "5", "6"], lines
    assert "dragon" in lines[0] and "mask" in lines[4]
    assert not work.exists()


def _legacy_work(work, hcp, pseudo):
    """A work directory as wsk 0.1 left it: the HCP sidecar, a scores file and refined.json."""
    import dataclasses

    from wsk.io import save_json

    save_json(work / "hcp" / "hcp.json", {"builder": "hcp", "recipe": dataclasses.asdict(hcp)})
    np.savez(work / "scores.tmp.npz", version=np.int32(1), mode=np.array(pseudo.score_mode),
             threshold=np.float32(pseudo.candidate_threshold))
    (work / "scores").mkdir()
    os.replace(work / "scores.tmp.npz", work / "scores" / "img.npz")
    save_json(work / "refined.json", {"version": 1, "images": {}, "settings": {
        "refine": True, "keep": pseudo.refine_keep, "order": pseudo.refine_order, "pca_energy": pseudo.pca_energy,
        "threshold": pseudo.candidate_threshold, "mode": pseudo.score_mode,
        "rough_top_regions": pseudo.rough_top_regions}})


def test_a_work_directory_of_wsk_0_1_is_adopted_from_its_records(synthetic_root, tmp_path):
    import dataclasses

    from wsk.errors import WskError
    from wsk.recipes import get_recipe
    from wsk.run_record import open_run

    demo = get_recipe("demo")
    work = tmp_path / "old"
    _legacy_work(work, demo.hcp, demo.pseudo)
    run = open_run(work, synthetic_root)   # no flag: the records say demo (tiny's HCP is narrower)
    assert run.recipe == demo
    record = json.loads((work / "run.json").read_text())
    assert record["adopted_from"] == [str(work / "hcp" / "hcp.json"), str(work / "scores" / "img.npz"),
                                      str(work / "refined.json")]
    # a flag that disagrees with the records is refused, naming the record
    other = tmp_path / "old2"
    _legacy_work(other, demo.hcp, demo.pseudo)
    with pytest.raises(WskError) as err:
        open_run(other, synthetic_root, recipe="paper")
    assert err.value.path == str(other / "hcp" / "hcp.json") and "recipe.hcp." in err.value.problem
    assert not (other / "run.json").exists()
    # values no named recipe has: the closest recipe with the recorded values in place of its own
    third = tmp_path / "old3"
    _legacy_work(third, demo.hcp, dataclasses.replace(demo.pseudo, candidate_threshold=0.7))
    run = open_run(third, synthetic_root)
    assert run.recipe.name == "demo+adopted"
    assert run.recipe.pseudo == dataclasses.replace(demo.pseudo, candidate_threshold=0.7)
    assert run.recipe.hcp == demo.hcp and run.recipe.seg == demo.seg
