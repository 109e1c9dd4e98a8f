"""Shared fixtures: tiny synthetic copick projects made once per test session."""

from __future__ import annotations

import os
import shutil

import pytest

# TOMOPICK_REQUIRE (set by .ci/run) turns skips of tests marked requires(NAME) into failures
from tests.ci_require import (  # noqa: F401
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)


@pytest.fixture(scope="session")
def synth_project_template(tmp_path_factory):
    """A read-only tiny synthetic project (2 runs of 40x72x64, seed 7) with GT picks and GT label maps.

    Tests that write into a project must use ``synth_project`` (a private copy) instead.
    """
    from pipeline.synthetic import make_synthetic_project

    out = tmp_path_factory.mktemp("synth_template")
    return make_synthetic_project(out / "project", runs=2, shape=(40, 72, 64), seed=7)


def copy_project(template_config, dst_dir):
    """Copy a project folder and point its config's overlay_root at the copy; returns the new config path."""
    import json

    shutil.copytree(template_config.parent, dst_dir)
    config = json.loads((dst_dir / "config.json").read_text())
    config["overlay_root"] = f"local://{(dst_dir / 'overlay').resolve()}"
    (dst_dir / "config.json").write_text(json.dumps(config, indent=2))
    return dst_dir / "config.json"


@pytest.fixture()
def synth_project(synth_project_template, tmp_path):
    """A private, writable copy of the tiny synthetic project; returns the path of its config.json."""
    return copy_project(synth_project_template, tmp_path / "project")


@pytest.fixture()
def synth_project_copy(synth_project_template, tmp_path):
    """A factory of further private copies: ``synth_project_copy("name")`` -> config path."""
    return lambda name: copy_project(synth_project_template, tmp_path / name)


def is_allocator_setting(key: str) -> bool:
    """An environment variable by which a user chooses the allocator (tests clear them to start from glibc's)."""
    return key.startswith("MALLOC_") or key in ("TOMOPICK_HEAP", "GLIBC_TUNABLES", "LD_PRELOAD")


def clear_allocator_settings(monkeypatch) -> None:
    for key in [k for k in os.environ if is_allocator_setting(k)]:
        monkeypatch.delenv(key)
