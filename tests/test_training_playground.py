"""The playground's Train tab in a real browser (Debian's Chromium driven by Playwright, as test_playground.py):
upload a zip, watch the step and the loss plot, "Try it", and the next video is made with the new LoRA."""

from __future__ import annotations

import json
import shutil

import pytest
from servers import start_server, stop_server
from test_training_clips import dataset_zip

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-tab")
    proc, base = start_server(root / "out", root / "server.log", "--models-dir", str(root / "models"))
    yield base, root
    stop_server(proc)


def test_train_tab_uploads_plots_the_loss_and_tries_the_lora(server):
    base, root = server
    zip_path = dataset_zip(root / "clips.zip")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 1400})
        sent = []
        page.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/jobs") and r.method == "POST" else None)
        page.goto(f"{base}/playground")
        page.click("#train summary")
        page.set_input_files("#train-dataset", str(zip_path))
        for field, value in (("name", "tab-style"), ("trigger", "mgnt"), ("steps", "8"), ("resolution", "64x64"),
                             ("num_frames", "9"), ("rank", "4")):
            page.fill(f"#train-{field}", value)
        page.click("#train-submit")
        page.wait_for_selector("#try-it", state="visible", timeout=240_000)
        assert page.is_hidden("#train-error")
        assert "succeeded" in page.inner_text("#train-status") or "step 8/8" in page.inner_text("#train-status")
        drawn = page.evaluate("""() => { const c = document.getElementById('loss-plot');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert drawn > 50  # the loss curve is on the canvas
        page.click("#try-it")
        assert page.input_value("#prompt").startswith("mgnt")
        page.fill("#prompt", "mgnt a magenta wall")
        page.click("#advanced summary")
        page.fill("#steps", "1")
        page.click("#submit")
        page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=120_000)
        assert page.is_hidden("#error")
        assert [json.loads(body).get("loras") for body in sent] == [[{"path": "tab-style"}]], sent
        browser.close()
