"""The web page in headless Debian chromium: a real click on "Synthesize" produces audio.

Needs `chromium` + `chromium-driver` (apt) and `selenium` (pip); skipped when they are missing.
"""

from __future__ import annotations

import io
import shutil
import socket
import time

import httpx
import pytest
import soundfile as sf
import torch

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    pytest.importorskip("gradio")
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import create_voice
    from gsvkit.serve.webui import build_ui
    from tiny import build_hubert, build_models, speechlike

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("webui")
    s1, s2 = build_models(root / "run")
    hubert = build_hubert(root / "hubert")
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voices = root / "voices"
    create_voice(voices / "zoe", s1=s1, s2=s2, ref_audio=ref, ref_text="This is Zoe talking.", ref_lang="en",
                 consent="synthetic test voice", hubert=hubert)  # fmt: skip
    tts = TTS(voices / "zoe", hubert=hubert)
    ui = build_ui(tts, voices_dir=voices, work_dir=root / "work")
    port = free_port()
    ui.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}", tts
    ui.close()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def driver():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,2000"):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


def test_click_produces_audio(page_url, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, tts = page_url
    driver.get(url)
    wait = WebDriverWait(driver, 180)
    box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#text textarea")))
    box.send_keys("Hello from a real browser click.")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#synthesize"))).click()
    info = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#info").text.strip() or None)
    assert "seed" in info and "s of audio" in info

    def audio_src(d):
        for el in d.find_elements(By.CSS_SELECTOR, "#result audio, #result a[download]"):
            src = el.get_attribute("src") or el.get_attribute("href")
            if src and ("/file=" in src or "/gradio_api/" in src):
                return src
        return None

    src = wait.until(audio_src)
    data = httpx.get(src, timeout=60).content
    wav, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == tts.sample_rate and len(wav) > 0.3 * sr and abs(wav).max() > 0
    # the page shows no error toast
    time.sleep(0.5)
    assert not driver.find_elements(By.CSS_SELECTOR, ".toast-body.error")
