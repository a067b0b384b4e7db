"""The playground and /docs in a real browser: Debian's headless Chromium driven by Playwright, against
a real tiny-preset server process on loopback. Every request the pages make must go to that server.

Chromium comes from the OS (`apt-get install chromium`; .ci/run installs it). Without it these tests
are skipped on a developer's machine, and fail in CI (CI=true), where it must be present.
"""

import io
import math
import os
import shutil
import struct
import wave
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests: apt-get install chromium")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

# As root, without a display, on a machine with no network but loopback: no sandbox, no GPU, and none
# of Chromium's own background connections (they would be refused, many at a time).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1000, "height": 1100})
    page = context.new_page()
    page.requested_hosts = set()
    page.on("request", lambda request: page.requested_hosts.add(urlsplit(request.url).netloc)
            if request.url.startswith(("http:", "https:")) else None)
    yield page
    context.close()


def assert_only_this_server(page, live_server):
    assert page.requested_hosts == {urlsplit(live_server).netloc}


def test_generate_in_the_playground(page, live_server, tmp_path):
    page.goto(f"{live_server}/playground")
    page.fill("#prompt", "A lighthouse at dusk, waves and gulls")
    page.select_option("#length", "49")  # 1.96 s at 25 fps
    page.click("#advanced summary")
    page.fill("#steps", "60")  # enough steps that the bar is seen between 0 and the end
    page.fill("#seed", "11")
    # Record every value the progress bar takes.
    page.evaluate("""() => {
        window.seen = [];
        const bar = document.getElementById('progress');
        new MutationObserver(() => window.seen.push([bar.value, bar.max]))
            .observe(bar, {attributes: true, attributeFilter: ['value', 'max']});
    }""")
    page.click("#submit")
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=120_000)

    seen = page.evaluate("window.seen")
    top = 60 + 3  # two-stage (the tiny preset's default): stage 2's 3 steps follow
    between = {value for value, total in seen if total == top and 0 < value < top}
    assert len(between) >= 2, seen  # the bar moved through the steps, not straight to the end
    assert seen[-1] == [top, top]
    duration = page.evaluate("document.getElementById('video').duration")
    assert duration == pytest.approx(49 / 25, abs=0.05)
    assert page.is_visible("#download") and page.get_attribute("#download", "download").endswith(".mp4")
    assert page.is_hidden("#result-image") and page.is_hidden("#unplayable")
    assert page.is_hidden("#error")
    assert "A lighthouse at dusk" in page.inner_text("#recent")

    shot = page.screenshot(full_page=True)
    (tmp_path / "playground.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, controls and the video frame, not a blank page
    assert max(count for count, _ in colours) < 0.9 * image.width * image.height
    assert_only_this_server(page, live_server)


def gif_bytes(size=(40, 24)) -> bytes:
    """A two-frame animated GIF."""
    frames = [Image.new("RGB", size, colour) for colour in ((200, 40, 40), (40, 40, 200))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return out.getvalue()


def test_sizes_offer_16_9_and_the_named_presets(page, live_server):
    page.goto(f"{live_server}/playground")
    page.wait_for_selector("#size optgroup + optgroup option", state="attached")  # the schema's named sizes
    options = dict(page.eval_on_selector_all("#size option", "nodes => nodes.map(n => [n.value, n.textContent])"))
    for size in ("768x432", "432x768", "1280x720", "1920x1080", "512x288", "288x512"):
        assert size in options, options
    from ltx2.schema import VIDEO_SIZE_PRESETS

    for name, (width, height) in VIDEO_SIZE_PRESETS.items():  # every named size, with its pixels
        assert options[name] == f"{name}, {width}x{height}"
    assert page.input_value("#size") == "288x512"  # the server's default is preselected


def test_a_named_size_is_sent_as_video_size_and_each_result_type_is_shown_by_what_it_is(page, live_server):
    """The size goes as `video_size`. The result is shown by its Content-Type: an image (a GIF) in <img>,
    where a <video> could not play it; a video this browser cannot play (ProRes in MOV) as a note and its
    download link. The server makes MP4 only (the other formats are video_output_type's, not here yet), so
    the browser is handed those files for the jobs' own: the page goes by the Content-Type alone."""
    served = [("image/gif", gif_bytes()), ("video/quicktime", b"\x00\x00\x00\x14ftypqt  ")]
    page.route("**/jobs/*/video", lambda route: route.fulfill(
        status=200, body=served[0][1], content_type=served[0][0]))
    page.goto(f"{live_server}/playground")
    page.wait_for_selector("#size option[value='square']", state="attached")
    page.fill("#prompt", "A red ball bouncing, a thud")
    page.select_option("#size", "square")
    page.select_option("#length", "9")
    page.click("#advanced summary")
    page.fill("#steps", "1")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/jobs")) as posted:
        page.click("#submit")
    body = posted.value.post_data_json
    assert body["video_size"] == "square" and "width" not in body and "height" not in body
    image = "document.getElementById('result-image')"
    page.wait_for_function(f"{image}.complete && {image}.naturalWidth > 0", timeout=120_000)
    assert page.evaluate(f"[{image}.naturalWidth, {image}.naturalHeight]") == [40, 24]
    assert page.is_visible("#result-image") and page.is_hidden("#video") and page.is_hidden("#unplayable")
    assert page.get_attribute("#download", "download").endswith(".gif")
    assert page.inner_text("#result-info").startswith("512x512, 0.36 s")  # the job the server ran

    served.pop(0)
    page.select_option("#size", "512x288")
    page.click("#submit")
    page.wait_for_selector("#unplayable", state="visible", timeout=120_000)
    assert page.is_hidden("#video") and page.is_hidden("#result-image")
    assert page.get_attribute("#download", "download").endswith(".mov")
    assert page.inner_text("#result-info").startswith("512x288, 0.36 s")
    assert page.is_hidden("#error")
    assert_only_this_server(page, live_server)


# Each option of a picker against the picker itself: a copy of the <select> holding only that option, sized
# to its content by Chromium (text, padding and arrow), must be no wider than the picker on the page.
FITS = """(id) => {
    const select = document.getElementById(id);
    const have = select.getBoundingClientRect().width;
    return Array.from(select.options, (opt) => {
        const probe = select.cloneNode(false);
        probe.removeAttribute('id');
        probe.appendChild(new Option(opt.textContent));
        Object.assign(probe.style, {width: 'max-content', position: 'absolute', visibility: 'hidden'});
        select.parentNode.appendChild(probe);
        const need = probe.getBoundingClientRect().width;
        probe.remove();
        return [opt.textContent, need, have];
    });
}"""


@pytest.mark.parametrize("width", [1280, 1000, 390])
def test_every_size_label_is_read_whole(browser, live_server, width):
    """At 1280 px the size picker showed "9:16 portrait, 288x51…": every label of every picker fits now, on
    a desktop and on a phone."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server}/playground")
    page.wait_for_selector("#size optgroup option[value='landscape_16_9']", state="attached")
    for picker in ("size", "length", "format"):
        rows = page.evaluate(FITS, picker)
        assert len(rows) > 3
        cut = [(text, round(need), round(have)) for text, need, have in rows if need > have]
        assert not cut, f"#{picker} cuts {cut}"
    labels = page.eval_on_selector_all("#size option", "nodes => nodes.map(n => n.textContent)")
    assert "auto: image's shape, ~1920x1080" in labels and "landscape_16_9, 1024x576" in labels
    context.close()


def png_bytes(size, colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    """A 440 Hz tone (not silence: the server trims leading silence before it measures)."""
    samples = [int(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))]
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return out.getvalue()


def test_auto_size_end_image_and_the_soundtracks_length(page, live_server):
    """auto takes the start image's shape (3:2 here) at about the chosen size's pixels; the end image goes as
    image_end; with a soundtrack, "match the soundtrack's length" sends match_audio_length instead of
    num_frames, and the video lasts as long as the audio (0.36 s = 9 frames, not the picker's 1.96 s)."""
    from ltx2.media.inputs import auto_size
    from ltx2.pipelines.conditioning import frames_for_duration

    page.goto(f"{live_server}/playground")
    page.wait_for_selector("#size option[value='auto@512x288']", state="attached")
    assert page.is_disabled("#match-audio") and page.is_enabled("#length")  # nothing to match yet
    page.fill("#prompt", "A red square turns blue, a low hum")
    page.set_input_files("#image", files=[{"name": "start.png", "mimeType": "image/png",
                                           "buffer": png_bytes((96, 64), (200, 40, 40))}])
    page.set_input_files("#image-end", files=[{"name": "end.png", "mimeType": "image/png",
                                               "buffer": png_bytes((96, 64), (40, 40, 200))}])
    page.set_input_files("#audio", files=[{"name": "hum.wav", "mimeType": "audio/wav", "buffer": wav_bytes(0.36)}])
    assert page.inner_text("#image-end-name") == "end.png"
    assert page.is_enabled("#match-audio") and page.is_checked("#match-audio")  # fal's default: on
    assert page.is_disabled("#length")  # the soundtrack sets the length
    page.uncheck("#match-audio")
    assert page.is_enabled("#length")
    page.check("#match-audio")
    page.select_option("#size", "auto@512x288")
    page.click("#advanced summary")
    page.fill("#steps", "1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/jobs")) as answer:
        page.click("#submit")
    body = answer.value.request.post_data_json
    assert body["video_size"] == "auto" and (body["width"], body["height"]) == (512, 288)
    assert body["match_audio_length"] is True and "num_frames" not in body
    assert body["image_start"].startswith("data:image/png;base64,")
    assert body["image_end"].startswith("data:image/png;base64,") and body["image_end"] != body["image_start"]
    job_id = answer.value.json()["id"]
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=120_000)

    width, height = auto_size(96, 64, 512 * 288)
    frames = frames_for_duration(0.36, 25)
    assert (frames, round(width / height, 1)) == (9, 1.5)
    assert page.inner_text("#result-info").startswith(f"{width}x{height}, {frames / 25} s")
    result = httpx.get(f"{live_server}/jobs/{job_id}", timeout=30).json()["result"]
    assert result["has_image_end"] is True and result["length_from"] == "audio"
    assert page.is_hidden("#error")
    assert_only_this_server(page, live_server)


def test_auto_size_without_a_start_image_names_the_size(page, live_server):
    page.goto(f"{live_server}/playground")
    page.wait_for_selector("#size option[value='auto@768x432']", state="attached")
    page.fill("#prompt", "a cat")
    page.select_option("#size", "auto@768x432")
    page.click("#submit")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert page.inner_text("#error").startswith('video_size "auto" takes its aspect ratio from image_start')
    assert "invalid" in page.get_attribute("#size", "class")
    assert page.is_hidden("#result")


def test_a_bad_field_shows_the_servers_message(page, live_server):
    page.goto(f"{live_server}/playground")
    page.fill("#prompt", "a cat")
    page.click("#advanced summary")
    page.fill("#steps", "500")
    page.click("#submit")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert page.inner_text("#error") == "num_inference_steps must be <= 100, got 500"
    assert "invalid" in page.get_attribute("#steps", "class")
    assert page.is_hidden("#result")


def test_docs_render_offline(page, live_server):
    page.goto(f"{live_server}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    assert "ltx2" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("[data-path='/v1/videos']", timeout=30_000)
    assert page.is_visible("a[href='/playground']")
    assert_only_this_server(page, live_server)


def webm_clip(frames: int = 17, side: int = 64) -> bytes:
    """A small VP9 WebM (a codec every Chromium plays), a moving gradient at 25 fps."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        y, x = np.mgrid[0:side, 0:side]
        for i in range(frames):
            rgb = np.stack([(x * 4 + i * 9) % 256, (y * 4) % 256, 0 * x + 40 + 10 * i], -1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def test_retake_a_video_with_the_span_picker(page, live_server):
    """A video dropped in "Retake a video" shows a preview and two sliders over its duration; the request sends
    video and retake {start, end} instead of a size and length (the video's own), and the result is the
    video's length with the span regenerated."""
    page.goto(f"{live_server}/playground")
    page.fill("#prompt", "A red ball bounces")
    page.set_input_files("#clip", files=[{"name": "clip.webm", "mimeType": "video/webm", "buffer": webm_clip()}])
    assert page.inner_text("#clip-name") == "clip.webm"
    page.wait_for_selector("#span", state="visible")
    page.wait_for_function("Number(document.getElementById('retake-end').max) > 0.6", timeout=30_000)
    assert page.is_disabled("#size") and page.is_disabled("#length")  # the video's own size and length
    # The middle third to start from, on the sliders' 0.04 s (one frame) steps.
    start, end = (float(page.inner_text(f"#retake-{e}-value").removesuffix(" s")) for e in ("start", "end"))
    assert 0.2 <= start < end <= 0.48, (start, end)
    page.fill("#retake-start", "0.12")  # a range input takes fill(); its input event moves the preview
    assert page.inner_text("#retake-start-value") == "0.12 s"
    page.fill("#retake-end", "0.08")  # before the start: the start moves down with it
    assert page.inner_text("#retake-start-value") == "0.04 s"
    page.fill("#retake-end", "0.28")
    page.click("#advanced summary")
    page.fill("#steps", "1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/jobs")) as answer:
        page.click("#submit")
    body = answer.value.request.post_data_json
    assert body["retake"] == {"start": 0.04, "end": 0.28} and body["video"].startswith("data:video/webm;base64,")
    assert not {"width", "height", "num_frames", "video_size"} & set(body)
    job_id = answer.value.json()["id"]
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=120_000)
    result = httpx.get(f"{live_server}/jobs/{job_id}", timeout=30).json()["result"]
    assert result["retake"]["first_frame"] == 1 and result["num_frames"] == 17 and result["resolution"] == "64x64"
    assert page.is_hidden("#error")
    assert_only_this_server(page, live_server)


def test_keyframe_rows_fill_the_keyframes_list(page, live_server):
    """"Add a keyframe" adds a row (an image, a frame number or seconds, a strength), Remove takes one out and the
    rows after it move up; the request's `keyframes` lists the rows in order, and the video holds both images. A
    frame past the clip is the server's 422, shown on that row's control; at the schema's limit the button is off."""
    from ltx2.keyframes import MAX_KEYFRAMES

    page.goto(f"{live_server}/playground")
    page.wait_for_function(f"document.getElementById('keyframes-max').textContent === '{MAX_KEYFRAMES}'")
    page.fill("#prompt", "A red square turns blue")
    page.select_option("#length", "25")
    for _ in range(3):
        page.click("#add-keyframe")
    assert page.locator("#keyframes .keyframe").count() == 3
    page.set_input_files("#keyframe-0-image", files=[{"name": "red.png", "mimeType": "image/png",
                                                      "buffer": png_bytes((64, 64), (200, 40, 40))}])
    page.fill("#keyframe-0-at", "8")
    page.fill("#keyframe-0-strength", "0.8")
    page.set_input_files("#keyframe-2-image", files=[{"name": "blue.png", "mimeType": "image/png",
                                                      "buffer": png_bytes((64, 64), (40, 40, 200))}])
    page.select_option("#keyframe-2-unit", "time")
    page.fill("#keyframe-2-at", "0.64")
    page.click("#keyframe-1-remove")  # the middle row: the last one becomes row 1
    assert page.locator("#keyframes .keyframe").count() == 2 and page.input_value("#keyframe-1-at") == "0.64"
    page.click("#advanced summary")
    page.fill("#steps", "1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/jobs")) as answer:
        page.click("#submit")
    body = answer.value.request.post_data_json
    first, second = body["keyframes"]
    assert {k: v for k, v in first.items() if k != "image"} == {"frame": 8, "strength": 0.8}
    assert {k: v for k, v in second.items() if k != "image"} == {"time": 0.64, "strength": 1}
    assert first["image"].startswith("data:image/png;base64,") and second["image"] != first["image"]
    job_id = answer.value.json()["id"]
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=120_000)
    result = httpx.get(f"{live_server}/jobs/{job_id}", timeout=30).json()["result"]
    assert result["keyframes"] == 2 and result["num_frames"] == 25, result
    assert page.is_hidden("#error")

    page.fill("#keyframe-0-at", "60")  # past the 25-frame clip
    page.click("#submit")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert page.inner_text("#error").startswith("keyframes.0.frame"), page.inner_text("#error")
    assert "invalid" in page.get_attribute("#keyframe-0-at", "class")
    for _ in range(MAX_KEYFRAMES):
        page.click("#add-keyframe", force=True)
    assert page.locator("#keyframes .keyframe").count() == MAX_KEYFRAMES and page.is_disabled("#add-keyframe")
    assert_only_this_server(page, live_server)
