"""The two CZII configs (portal and Kaggle layouts) and copick's cryoet_data_portal projects, offline: the portal
query is replaced by a stub (a run 16463 named TS_5_4 on the portal, voxel spacing 10.012), so the project opens
as copick would open it, and everything tomopick writes lands in the local overlay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import copick_io, formats
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ProjectError
from pipeline.synthetic import CZII_OBJECTS, synth_run_arrays

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PORTAL_TOMO = "wbp-denoised-denoiset-ctfdeconv"


def test_czii_run_configs_say_what_each_layout_calls_things():
    portal = load_config(CONFIGS / "czii_portal.yaml", check_files=False)
    assert (portal.voxel_size, portal.tomo_alg) == (10.012, PORTAL_TOMO)
    assert (portal.evaluate.ground_truth_user_id, portal.evaluate.ground_truth_session_id) == ("data-portal", None)
    assert portal.copick_config == str(CONFIGS / "czii_portal_copick.json")
    kaggle = load_config(CONFIGS / "czii_kaggle.yaml", check_files=False)
    assert (kaggle.voxel_size, kaggle.tomo_alg) == (10.0, "denoised")
    assert (kaggle.evaluate.ground_truth_user_id, kaggle.evaluate.ground_truth_session_id) == ("curation", "0")
    assert kaggle.evaluate.metric == portal.evaluate.metric == "czii"


def test_shipped_copick_configs_are_valid_and_carry_the_challenge_objects():
    from copick.impl.filesystem import CopickConfigFSSpec

    portal = json.loads((CONFIGS / "czii_portal_copick.json").read_text())
    copick_io.check_portal_config(portal, "czii_portal_copick.json")  # offline; raises on problems
    assert portal["dataset_ids"] == [10440] and all(o["identifier"] for o in portal["pickable_objects"])
    kaggle = json.loads((CONFIGS / "czii_kaggle_copick.json").read_text())
    CopickConfigFSSpec.model_validate(kaggle)
    want = [(o["name"], o["label"], o["radius"], o["weight"]) for o in CZII_OBJECTS]
    for doc in (portal, kaggle):
        assert [(o["name"], o["label"], o["radius"], o["metadata"]["weight"])
                for o in doc["pickable_objects"]] == want


@pytest.fixture()
def portal_project(tmp_path, monkeypatch):
    """The shipped portal config with its overlay in tmp_path, and the portal query stubbed."""
    from copick.impl.cryoet_data_portal import CopickRootCDP

    answer = {k: [] for k in ("runs", "annotation_files", "annotation_shapes", "annotations", "annotation_authors",
                              "voxel_spacings", "tomograms", "tomogram_authors")}
    answer["runs"] = [{"id": 16463, "name": "TS_5_4", "dataset_id": 10440}]
    answer["voxel_spacings"] = [{"id": 777, "run_id": 16463, "voxel_spacing": 10.012}]
    monkeypatch.setattr(CopickRootCDP, "_fetch_portal_data", lambda self: answer)
    monkeypatch.setenv("COPICK_PORTAL_CACHE", "0")
    doc = json.loads((CONFIGS / "czii_portal_copick.json").read_text())
    doc["overlay_root"] = f"local://{tmp_path / 'overlay'}"
    config = tmp_path / "portal.json"
    config.write_text(json.dumps(doc))
    return config


def test_portal_project_opens_offline_and_outputs_go_to_the_overlay(portal_project, tmp_path):
    from copick.impl.cryoet_data_portal import CopickRootCDP

    root = copick_io.open_project(portal_project)
    assert isinstance(root, CopickRootCDP)
    assert copick_io.run_names(root) == ["16463"] and copick_io.run_aliases(root) == {"TS_5_4": "16463"}
    # a tomogram of our own into the portal run (the stub's portal has none), ground truth as the portal names it
    tomogram, _, centres = synth_run_arrays((32, 64, 64), seed=(8, 0), density=2.0)
    mrc = formats.write_mrc(tmp_path / "ts.mrc", tomogram, 10.012)
    gt = [("TS_5_4", name, c[:, ::-1] * 10.012, None) for name, c in centres.items() if len(c)]
    (tmp_path / "gt.csv").write_text(formats.challenge_csv_text(gt))  # the challenge's names: TS_5_4
    assert main(["import-mrc", "-c", str(portal_project), str(mrc), "--run-names", "16463", "--tomo-alg",
                 PORTAL_TOMO, "--picks", str(tmp_path / "gt.csv"), "--user-id", "data-portal", "--session-id",
                 "74186"]) == 0
    run_yaml = yaml.safe_load((CONFIGS / "czii_portal.yaml").read_text())
    models = CONFIGS / "models"
    run_yaml.update(copick_config=str(portal_project), device="cpu",
                    model={"configs": [str(models / "demo_unet.yaml")], "weights": [str(models / "demo_unet.pth")]})
    run_yaml["localize"]["n_procs"] = 2
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_yaml))
    import run_all

    assert run_all.main([str(tmp_path / "run.yaml")]) == 0
    overlay = tmp_path / "overlay" / "ExperimentRuns" / "16463"
    assert (overlay / "Segmentations" / "10.012_octopi_1_predict-multilabel.zarr").is_dir()
    assert len(list((overlay / "Picks").glob("octopi_1_*.json"))) == 6
    root = copick_io.open_project(portal_project)
    assert copick_io.segmentation_inventory(root) == {"predict:octopi/1@10.012": 1}
    assert (tmp_path / "overlay" / "tomopick" / "scores" / "metrics.json").is_file()
    assert (tmp_path / "overlay" / "logs" / "segment-octopi_1_predict.yaml").is_file()
    # the challenge's CSV names the experiment as the challenge does
    out = tmp_path / "sub.csv"
    assert main(["export", "-c", str(portal_project), "--format", "csv", "-o", str(out)]) == 0
    assert set(out.read_text().splitlines()[1].split(",")[1:3]) & {"TS_5_4"}


@pytest.mark.parametrize("change, message", [
    ({"dataset_ids": None}, "dataset_ids"),
    ({"dataset_ids": []}, "'dataset_ids' is empty"),
    ({"overlay_root": "s3://bucket/overlay"}, "not a local folder"),
    ({"overlay_root": None}, "without 'overlay_root'"),
    ({"config_type": "mlcroissant"}, "not supported"),
])
def test_portal_config_problems_are_named_before_the_portal_is_asked(portal_project, change, message, monkeypatch):
    from copick.impl.cryoet_data_portal import CopickRootCDP

    def no_network(self):
        raise AssertionError("the portal was asked")

    monkeypatch.setattr(CopickRootCDP, "_fetch_portal_data", no_network)
    doc = json.loads(portal_project.read_text())
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    portal_project.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=message):
        copick_io.open_project(portal_project)


def test_portal_unreachable_is_a_clear_error(portal_project, monkeypatch):
    from copick.impl.cryoet_data_portal import CopickRootCDP

    def offline(self):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(CopickRootCDP, "_fetch_portal_data", offline)
    with pytest.raises(ProjectError, match=r"CZII data portal for datasets \[10440\].*network"):
        copick_io.open_project(portal_project)


def test_portal_config_without_identifiers_warns(portal_project, caplog):
    doc = json.loads(portal_project.read_text())
    del doc["pickable_objects"][3]["identifier"]
    portal_project.write_text(json.dumps(doc))
    copick_io.open_project(portal_project)
    assert "ribosome" in caplog.text and "identifier" in caplog.text
