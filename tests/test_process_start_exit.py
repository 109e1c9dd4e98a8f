"""pipeline.networks' lean MONAI import: tomopick's own processes import MONAI without the optional packages no
network needs, build the same networks with the same outputs, and fall back to the whole import if MONAI ever
needs one of them; a library user's process keeps the whole import; the CLI freezes its objects for a
quick exit. Each case runs in a fresh Python."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# build every architecture of tests/test_models.py's TINY set with seeded weights, run it on a seeded input
BUILD = """
import json, sys
{prelude}
import torch
from pipeline import networks
from tests.test_models import TINY
sums = {{}}
for arch, cfg in sorted(TINY.items()):
    torch.manual_seed(0)
    net = networks.BUILDERS[arch](cfg, "test").eval()
    x = torch.randn((1, 1, cfg["dim_in"], cfg["dim_in"], cfg["dim_in"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    sums[arch] = [float(out.double().sum()), float(out.double().abs().sum())]
loaded = sorted(m for m in networks.MONAI_UNNEEDED if m in sys.modules)
import matplotlib.figure, scipy.stats  # not blocked once MONAI is in
print(json.dumps({{"sums": sums, "loaded": loaded, "lean": networks._lean}}))
"""


def _build(prelude: str) -> dict:
    out = subprocess.run([sys.executable, "-c", BUILD.format(prelude=prelude)], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def whole():
    pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    return _build("")


def test_library_use_imports_monai_whole(whole):
    assert whole["lean"] is False
    # MONAI's __init__ brings scipy.stats whatever else is installed (scipy is a tomopick dependency)
    assert "scipy.stats" in whole["loaded"], whole


def test_lean_import_builds_the_same_networks_without_the_unneeded_packages(whole):
    lean = _build("from pipeline.networks import lean_monai\nlean_monai()")
    assert lean["lean"] is True
    assert lean["loaded"] == [], lean  # none of matplotlib, pandas, skimage, scipy.signal/stats came in
    assert lean["sums"].keys() == whole["sums"].keys() == {"Unet", "SegResNet", "DynUNet", "SwinUNETR"}
    assert lean["sums"] == whole["sums"]  # the same code runs: bit-identical outputs


def test_a_monai_that_needs_a_blocked_package_is_imported_whole(whole):
    # stand-in for a MONAI release that imports one of them unconditionally: block a module MONAI cannot do without
    lean = _build("from pipeline import networks\nnetworks.MONAI_UNNEEDED += ('monai.utils.module',)\n"
                  "networks.lean_monai()")
    assert "scipy.stats" in lean["loaded"], lean
    assert lean["sums"] == whole["sums"]


def test_the_cli_is_a_lean_process():
    code = ("import gc\nimport pipeline.cli as cli\nfrom pipeline import networks\n"
            "from pipeline.collector import STARTUP_GEN0_THRESHOLD as T\n"
            "assert not networks._lean\nseen = []\n"
            "cli._main = lambda argv: seen.append(gc.get_threshold()[0]) or 0  # the command, as it starts\n"
            "cli.main(['--help'])\n"
            "print(networks._lean, seen == [T], gc.get_threshold()[0] != T)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    # and its collector waits for the models while the command runs (pipeline/collector.py), not after it
    assert out.stdout.strip().splitlines()[-1] == "True True True"


def test_the_cli_freezes_its_objects_before_the_interpreter_exits():
    # the last collections at exit would walk every object torch and MONAI made (~1 s); frozen ones are skipped
    code = ("import gc\nfrom pipeline.cli import main\nassert gc.get_freeze_count() == 0\n"
            "rc = main(['localize', '-c', '/nonexistent/config.json'])\nprint(rc, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rc, frozen = map(int, out.stdout.split()[-2:])
    assert rc == 2 and frozen > 1000, out.stdout


def test_only_the_importing_thread_goes_without():
    from pipeline.networks import _Unneeded

    finder = _Unneeded()
    with pytest.raises(ImportError, match="not imported with MONAI"):
        finder.find_spec("scipy.stats")
    assert finder.find_spec("scipy.ndimage") is None
    seen = []
    t = threading.Thread(target=lambda: seen.append(finder.find_spec("scipy.stats")))
    t.start()
    t.join()
    assert seen == [None]  # another thread importing scipy.stats meanwhile is not refused
