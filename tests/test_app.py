"""The web demo as users meet it: `elasticast app` serving on 127.0.0.1 (its own process, a real HTTP server) and
Debian's chromium driving the page through Playwright (its own browser download is not reachable here)."""

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from gradio_client import Client, handle_file
from playwright.sync_api import expect, sync_playwright
from test_hub import REPO_ID, captured_hub, commit_to_git, free_port, olah_server, wait_for  # noqa: F401 (fixtures)
from transformers import pipeline

from elasticast import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.hub import push
from elasticast.inference import ElasticASTClassifier

RATE = 16000
ROOT = str(Path(__file__).resolve().parents[1])
LABELS = ["tone", "noise", "chirp"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Generous: this machine is shared with other jobs.
RESULT_TIMEOUT_MS = 120_000


def sound(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """`seconds` of a tone (with a harmonic), white noise or a rising chirp, float32 at 16 kHz."""
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "tone":
        wave = 0.3 * np.sin(2 * np.pi * (440 + 110 * seed) * t) + 0.1 * np.sin(2 * np.pi * (880 + 220 * seed) * t)
    elif kind == "noise":
        wave = 0.2 * np.random.default_rng(seed).standard_normal(t.size)
    else:  # chirp: 200 Hz → 4 kHz every second
        wave = 0.3 * np.sin(2 * np.pi * (200 * (t % 1) + 1900 * (t % 1) ** 2) * (1 + 0.1 * seed))
    return wave.astype(np.float32)


def build_model(folder: Path) -> ElasticASTForAudioClassification:
    """A tiny random ElasticAST whose head is solved by least squares so that tones, noise and chirps get clearly
    different labels (a real, separable decision instead of a random one)."""
    config = ElasticASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                              label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    model = ElasticASTForAudioClassification(config).eval()
    extractor = ElasticASTFeatureExtractor()
    waves = [sound(kind, seconds, seed) for kind in LABELS for seconds, seed in ((3, 0), (5, 1), (8, 2))]
    targets = torch.tensor([i for i in range(len(LABELS)) for _ in range(3)])
    captured = []
    hook = model.classifier.dense.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    with torch.no_grad():
        for wave in waves:
            model(**extractor(wave, sampling_rate=RATE, return_tensors="pt"))
    hook.remove()
    inputs = torch.cat([torch.cat(captured).double(), torch.ones(len(waves), 1, dtype=torch.float64)], dim=1)
    wanted = 6.0 * torch.nn.functional.one_hot(targets, len(LABELS)).double() - 3.0
    solution = torch.linalg.lstsq(inputs, wanted, driver="gelsd").solution  # [D + 1, num_labels]
    with torch.no_grad():
        model.classifier.dense.weight.copy_(solution[:-1].T.float())
        model.classifier.dense.bias.copy_(solution[-1].float())
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    paths = {"tone": folder / "tone.wav", "noise": folder / "noise.wav", "long": folder / "ten_minutes.wav",
             "corrupt": folder / "corrupt.wav"}
    soundfile.write(paths["tone"], sound("tone", 3), RATE, subtype="PCM_16")
    soundfile.write(paths["noise"], sound("noise", 5, seed=1), RATE, subtype="PCM_16")
    with soundfile.SoundFile(paths["long"], "w", RATE, 1, subtype="PCM_16") as long:  # 10 min, one minute a block
        for minute in range(10):
            long.write(sound(LABELS[minute % 3], 60, seed=minute))
    # A RIFF header promising PCM data, then garbage: what a truncated or mislabelled upload looks like.
    paths["corrupt"].write_bytes(b"RIFF\x24\x00\x10\x00WAVEfmt " + bytes(np.random.default_rng(0).integers(0, 256, 4096,
                                                                                                       np.uint8)))
    return paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    build_model(folder)
    return folder


@contextlib.contextmanager
def serving(command: list[str], cwd, env: dict, url: str, log_path: Path):
    """Runs `command` (a web server) and yields `url` once it answers 200; stops the server afterwards."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{command} exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"{url} did not answer within 120 s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory):
    """`elasticast app MODEL --port N` in its own process, as a user starts it; yields its URL once it answers."""
    port = free_port()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "elasticast.cli", "app", str(model_dir), "--host", "127.0.0.1", "--port",
               str(port), "--no-share"]
    log_path = tmp_path_factory.mktemp("server") / "app.log"
    with serving(command, root, env, f"http://127.0.0.1:{port}/", log_path) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url, files):
    # The microphone is chromium's fake capture device playing the tone file, its permission granted.
    microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={files['tone']}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + microphone)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["microphone"])
        page = context.new_page()
        page.goto(app_url)
        yield page
        browser.close()


def classify_in_page(page, path: Path, compression: float | None = None, expect_text: str = " s of audio"):
    """Puts `path` into the audio input (clearing what is there), optionally moves the slider, presses Classify
    and waits until the summary beside the result shows `expect_text`."""
    clear = page.locator("#audio").get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()
    page.locator("input[type=file]").first.set_input_files(str(path))
    if compression is not None:
        page.locator("input[type=range]").first.fill(str(compression))
        expect(page.locator("input[type=range]").first).to_have_value(f"{compression:g}")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#cost")).to_contain_text(expect_text, timeout=RESULT_TIMEOUT_MS)


def shown_scores(page) -> dict[str, float]:
    """The scores the label component shows, read from its meters' exact values."""
    meters = page.locator("#top-labels meter")
    return {meters.nth(i).get_attribute("aria-label"): float(meters.nth(i).get_attribute("value"))
            for i in range(meters.count())}


def shown_tokens(page) -> int:
    return int(re.search(r"([\d,]+) tokens", page.locator("#cost").inner_text()).group(1).replace(",", ""))


def test_app_in_a_real_browser(page, model_dir, files, tmp_path):
    extractor = ElasticASTFeatureExtractor.from_pretrained(model_dir)
    reference = pipeline("audio-classification", model=str(model_dir))
    classifier = ElasticASTClassifier.from_pretrained(model_dir)
    num_samples = {name: soundfile.info(files[name]).frames for name in ("tone", "noise", "long")}

    # 1. upload a wav, press the button: the top label is the pipeline's top-1 for that file
    classify_in_page(page, files["tone"], expect_text="at C = 1 ")
    expected = reference(str(files["tone"]), top_k=None)
    expect(page.locator("#top-labels [data-testid=label-output-value]")).to_have_text(expected[0]["label"])
    at_c1 = shown_scores(page)
    pipeline_scores = {item["label"]: item["score"] for item in expected}
    assert at_c1.keys() == pipeline_scores.keys()
    for label, score in at_c1.items():
        assert score == pytest.approx(pipeline_scores[label], abs=1e-4)
    tokens_c1 = shown_tokens(page)
    assert tokens_c1 == sum(extractor.segment_lengths(num_samples["tone"], 1.0))
    page.screenshot(path=tmp_path / "1-tone.png", full_page=True)

    # 2. the compression slider: fewer tokens (the extractor's count at that C) and the classifier's scores at C = 4
    classify_in_page(page, files["tone"], compression=4, expect_text="at C = 4 ")
    tokens_c4 = shown_tokens(page)
    assert tokens_c4 == sum(extractor.segment_lengths(num_samples["tone"], 4.0)) < tokens_c1
    at_c4 = shown_scores(page)
    expected_c4 = dict(classifier.classify(str(files["tone"]), compression=4.0, top_k=len(LABELS)).top)
    for label, score in at_c4.items():
        assert score == pytest.approx(expected_c4[label], abs=1e-4)
    assert max(abs(at_c4[label] - at_c1[label]) for label in LABELS) > 1e-3
    page.screenshot(path=tmp_path / "2-tone-c4.png", full_page=True)

    # 3. a corrupt upload: a readable error in the page naming the file ...
    page.locator("#audio").get_by_role("button", name="Clear").first.click()
    page.locator("input[type=file]").first.set_input_files(str(files["corrupt"]))
    page.get_by_role("button", name="Classify").click()
    error = page.get_by_text("Could not classify corrupt.wav").first
    expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    page.wait_for_timeout(500)  # the toast slides in
    page.screenshot(path=tmp_path / "3-corrupt.png", full_page=True)

    # ... and the app still serves the next request, a different sound with a different label
    classify_in_page(page, files["noise"], compression=1, expect_text="5.0 s of audio")
    expected_noise = reference(str(files["noise"]), top_k=1)[0]["label"]
    assert expected_noise != expected[0]["label"]
    expect(page.locator("#top-labels [data-testid=label-output-value]")).to_have_text(expected_noise)

    # 4. ten minutes: progress shows while it runs, then the labels, the timeline and the segment table
    clear = page.locator("#audio").get_by_role("button", name="Clear")
    clear.first.click()
    page.locator("input[type=file]").first.set_input_files(str(files["long"]))
    page.get_by_role("button", name="Classify").click()
    expect(page.get_by_text(re.compile(r"audio classified")).first).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#cost")).to_contain_text("600.0 s of audio", timeout=RESULT_TIMEOUT_MS)
    assert shown_tokens(page) == sum(extractor.segment_lengths(num_samples["long"], 1.0))
    expect(page.locator("#timeline img")).to_be_visible()
    # the segment table holds the classifier's segments (Gradio renders the rows it shows, virtually)
    segments = classifier.classify(str(files["long"]), top_k=len(LABELS)).segments
    assert len({segment.label for segment in segments}) >= 2
    grid = page.locator("#segments [role=grid]")
    assert int(grid.get_attribute("aria-rowcount")) == len(segments) + 1  # + the header row
    cells = page.locator("#segments [role=gridcell][data-col='2']")
    assert cells.count() >= 3
    for i in range(cells.count()):
        assert cells.nth(i).inner_text().strip() == segments[int(cells.nth(i).get_attribute("data-row"))].label
    page.screenshot(path=tmp_path / "4-ten-minutes.png", full_page=True)

    # 5. the microphone: record 3.5 s (chromium plays the tone file into its fake device) and classify it
    audio = page.locator("#audio")
    audio.get_by_role("button", name="Clear").first.click()
    audio.get_by_role("button", name="Record audio").click()
    audio.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3500)
    audio.get_by_role("button", name="Stop", exact=True).locator("visible=true").first.click()
    expect(audio).to_contain_text(re.compile(r"0:0[2-7]"))  # the player shows the recording once it is uploaded
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#cost")).not_to_contain_text("600.0 s of audio", timeout=RESULT_TIMEOUT_MS)
    recorded = float(re.search(r"([\d.]+) s of audio", page.locator("#cost").inner_text()).group(1))
    assert 2.0 < recorded < 8.0
    expect(page.locator("#top-labels [data-testid=label-output-value]")).to_have_text(expected[0]["label"])
    page.screenshot(path=tmp_path / "5-microphone.png", full_page=True)

    # 6. an example clip (generated by the app at start): the 90-second mixture, longer than one window
    audio.get_by_role("button", name="Clear").first.click()
    audio.get_by_role("button", name="Upload file").click()
    page.get_by_text("mixture_90s.wav").click()
    expect(audio).to_contain_text("1:30")  # the player shows the example's length once it is loaded
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#cost")).to_contain_text("90.0 s of audio", timeout=RESULT_TIMEOUT_MS)
    windows = extractor.segment_lengths(90 * RATE, 1.0)
    assert shown_tokens(page) == sum(windows) and len(windows) > 1
    expect(page.locator("#cost")).to_contain_text(f"in {len(windows)} window(s)")
    expect(page.locator("#timeline img")).to_be_visible()


def test_space_app_serves_a_hub_repo(model_dir, files, tmp_path, captured_hub, olah_server):
    """The `app.py` that `elasticast push` ships, run as a Space runs it (`python app.py`), loading the pushed repo
    from a Hub (olah over HTTP); queried through Gradio's own client."""
    push(model_dir, REPO_ID)
    commit = captured_hub["create_commit"][-1]["files"]
    commit_to_git(commit, olah_server["mirrors"] / "models" / REPO_ID)
    wait_for(f"http://127.0.0.1:{olah_server['port']}/api/models/{REPO_ID}/revision/main")
    space = tmp_path / "space"
    space.mkdir()
    (space / "app.py").write_bytes(commit["app.py"])
    port = free_port()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": f"http://127.0.0.1:{olah_server['port']}", "HF_HUB_DISABLE_XET": "1",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving([sys.executable, "app.py"], space, env, f"http://127.0.0.1:{port}/", tmp_path / "space.log") as url:
        client = Client(url, verbose=False)
        labels, cost, _, _ = client.predict(handle_file(str(files["noise"])), 1.0, None, None, api_name="/classify")
    expected = pipeline("audio-classification", model=str(model_dir))(str(files["noise"]), top_k=1)[0]
    assert labels["label"] == expected["label"]
    assert labels["confidences"][0]["confidence"] == pytest.approx(expected["score"], abs=1e-4)
    assert "5.0 s of audio" in cost


def test_live_microphone_updates_labels_while_recording(page, model_dir, files, tmp_path):
    """The live section: chromium's fake microphone plays the tone file into a streaming `gr.Audio`; the labels and
    the window list change while recording (several windows before Stop), the top label is the tone's."""
    expected = pipeline("audio-classification", model=str(model_dir))(str(files["tone"]), top_k=1)[0]["label"]
    live = page.locator("#live-audio")
    live.get_by_role("button", name="Record", exact=True).click()
    log = page.locator("#live-log")
    expect(log).to_contain_text("1 window(s)", timeout=RESULT_TIMEOUT_MS)  # after 2 s of audio
    first = log.inner_text()
    expect(page.locator("#live-labels [data-testid=label-output-value]")).to_have_text(expected)
    expect(log).to_contain_text("3 window(s)", timeout=RESULT_TIMEOUT_MS)  # still recording: more windows came
    assert log.inner_text() != first
    page.screenshot(path=tmp_path / "7-live.png", full_page=True)
    live.get_by_role("button", name="Stop", exact=True).locator("visible=true").first.click()
    expect(log).to_contain_text(re.compile(r"\d+ window\(s\), \d+\.\d s heard"), timeout=RESULT_TIMEOUT_MS)
    windows = int(re.search(r"(\d+) window\(s\)", log.inner_text()).group(1))
    assert windows >= 3
    expect(page.locator("#live-labels [data-testid=label-output-value]")).to_have_text(expected)


def test_app_reliability(page, model_dir, files, tmp_path):
    """Reliability: started without GRADIO_ANALYTICS_ENABLED in its environment (the app turns analytics off itself),
    two requests at once (a 3-s clip is answered while a 10-minute one is still running), an upload over
    --max-file-size refused with a message, NaN audio → a readable error without server paths, and the app's own
    temporary folder removed when the server stops."""
    port = free_port()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])), TMPDIR=str(temporary),
               GRADIO_TEMP_DIR=str(temporary / "gradio"))
    big = tmp_path / "big.wav"
    with soundfile.SoundFile(big, "w", RATE, 1, subtype="FLOAT") as handle:  # 8 minutes of float32: 30.7 MB
        for _ in range(8):
            handle.write(np.zeros(60 * RATE, np.float32))
    nan = sound("tone", 2)
    nan[RATE] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
    command = [sys.executable, "-m", "elasticast.cli", "app", str(model_dir), "--port", str(port), "--no-share",
               "--max-file-size", "25mb"]
    with serving(command, ROOT, env, f"http://127.0.0.1:{port}/", tmp_path / "app.log") as url:
        assert len(list(temporary.glob("elasticast-app-*"))) == 1
        context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})  # the module's chromium
        try:
            long_page, short_page = context.new_page(), context.new_page()
            for page in (long_page, short_page):
                page.goto(url)
            long_page.locator("input[type=file]").first.set_input_files(str(files["long"]))
            expect(long_page.locator("#audio")).to_contain_text("10:00", timeout=RESULT_TIMEOUT_MS)  # uploaded
            short_page.locator("input[type=file]").first.set_input_files(str(files["tone"]))
            expect(short_page.locator("#audio")).to_contain_text("0:03", timeout=RESULT_TIMEOUT_MS)
            long_page.get_by_role("button", name="Classify").click()
            started = time.perf_counter()
            expect(long_page.get_by_text(re.compile(r"audio classified")).first).to_be_visible(
                timeout=RESULT_TIMEOUT_MS)  # the long request is running ...
            short_page.get_by_role("button", name="Classify").click()
            short_started = time.perf_counter()
            expect(short_page.locator("#cost")).to_contain_text("3.0 s of audio", timeout=RESULT_TIMEOUT_MS)
            short_done = time.perf_counter() - started
            short_wait = time.perf_counter() - short_started
            long_running = "600.0 s of audio" not in long_page.locator("#cost").inner_text()
            expect(long_page.locator("#cost")).to_contain_text("600.0 s of audio", timeout=RESULT_TIMEOUT_MS)
            long_done = time.perf_counter() - started
            print(f"concurrent requests: the 3-s clip answered {short_wait:.1f} s after its click, "
                  f"{short_done:.1f} s after the 10-min one started, which took {long_done:.1f} s")
            assert long_running and short_done < long_done  # ... and the short one did not wait behind it

            short_page.locator("#audio").get_by_role("button", name="Clear").first.click()
            short_page.locator("input[type=file]").first.set_input_files(str(big))
            expect(short_page.get_by_text(re.compile(r"exceed the maximum allowed size of 25(\.0)? ?Mb.*big\.wav", re.I))
                   .first).to_be_visible(timeout=RESULT_TIMEOUT_MS)
            short_page.screenshot(path=tmp_path / "too-big.png", full_page=True)

            short_page.reload()
            short_page.locator("input[type=file]").first.set_input_files(str(tmp_path / "nan.wav"))
            expect(short_page.locator("#audio")).to_contain_text("0:02", timeout=RESULT_TIMEOUT_MS)
            short_page.get_by_role("button", name="Classify").click()
            error = short_page.get_by_text("Could not classify nan.wav").first
            expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
            text = error.inner_text()
            assert "NaN or Inf" in text and str(temporary) not in text and "/tmp" not in text, text
        finally:
            context.close()
    assert not list(temporary.glob("elasticast-app-*"))  # removed when the server stopped
