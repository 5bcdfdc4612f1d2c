"""optuna-dashboard as a person sees it: a study made by the runner, served with its artifacts,
opened in headless Chromium (Debian's `chromium`, driven by Playwright).

SAVE_SCREENSHOTS=1 also saves the study page and a trial's artifacts under bench/results/.
"""

import os
import shutil
from pathlib import Path

import pytest
import requests

from sweeps.artifacts import ARTIFACT_DIR
from tests.dashboard import start_dashboard, stop

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "bench" / "results"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")


def svg_texts(locator) -> list[str]:
    return [(t or "").strip() for t in locator.all_text_contents()]


def test_the_dashboard_shows_trials_curves_and_artifacts(tiny_study):
    from playwright.sync_api import sync_playwright

    cwd, url, name = tiny_study
    server, base = start_dashboard(url, cwd / ARTIFACT_DIR)
    save = os.environ.get("SAVE_SCREENSHOTS") == "1"
    try:
        [study_id] = [s["study_id"] for s in requests.get(f"{base}/api/studies", timeout=10).json()["study_summaries"]
                      if s["study_name"] == name]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)

                # the study page: the history names the objective, the intermediate values are drawn
                page.goto(f"{base}/dashboard/studies/{study_id}")
                history = page.locator(".MuiCard-root", has_text="History").first
                history.locator(".ytitle", has_text="val loss").wait_for()  # not "Objective Value"
                curves = page.locator(".MuiCard-root", has_text="Intermediate values")
                curves.locator(".js-plotly-plot .scatterlayer .trace path.js-line").nth(3).wait_for()
                lines = curves.locator(".scatterlayer .trace path.js-line")
                assert lines.count() == 4  # one val-loss curve a trial
                for i in range(4):  # each a drawn line through its evaluations, not an empty trace
                    assert (lines.nth(i).get_attribute("d") or "").count("L") >= 3
                assert svg_texts(curves.locator(".legendtext")) == [f"trial #{n}" for n in range(4)]
                if save:
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SHOTS / "dashboard_study.png"), full_page=True)

                # the trials, listed; the best one's page shows its artifacts, its curve as an image
                page.goto(f"{base}/dashboard/studies/{study_id}/trials")
                page.get_by_text("4 Trials").wait_for()
                for n in range(4):
                    assert page.get_by_text(f"Trial {n}", exact=True).count() == 1
                page.get_by_text("Trial 3", exact=True).click()
                page.get_by_role("heading", name="Artifacts").wait_for()
                for filename in ("config.yaml", "metrics.jsonl", "curve.png"):
                    page.get_by_text(filename, exact=True).wait_for()
                curve = page.locator("img[src^='/artifacts/']")
                curve.wait_for()
                page.wait_for_function("img => img.complete", arg=curve.element_handle())
                assert curve.evaluate("img => img.naturalWidth") > 0  # decoded: served from --artifact-dir
                if save:  # the trial's pane scrolls on its own: a window tall enough to show its artifacts
                    box = page.get_by_role("heading", name="Artifacts").bounding_box()
                    page.set_viewport_size({"width": 1400, "height": int(box["y"]) + 360})
                    page.get_by_text("curve.png", exact=True).wait_for()
                    page.screenshot(path=str(SHOTS / "dashboard_trial_artifacts.png"))
                    shutil.copy(cwd / "outputs" / "studies" / name / "trial_0003" / "curve.png",
                                SHOTS / "dashboard_trial_curve.png")  # the artifact itself, full size
            finally:
                browser.close()
    finally:
        stop(server)
