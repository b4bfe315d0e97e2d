"""The chat page at GET /, driven in headless Chromium (Selenium + the system chromedriver)
against real daemons on loopback serving the tiny fixture model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.daemon_proc import API_KEY, FIXTURE_MODEL, DaemonProcess

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 120  # seconds: generous, the machine may be busy; nothing here measures speed


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or not Path(CHROMEDRIVER).is_file():
        return "no Chromium/chromedriver (Debian: apt-get install chromium chromium-driver)"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture
def browser() -> Iterator[object]:
    """A fresh headless Chromium (own profile, so empty localStorage) with its console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager must not try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def long_daemon(tmp_path_factory) -> Iterator[DaemonProcess]:
    """No API key, and room for long answers (the stop test asks for 8000 tokens)."""
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    proc = DaemonProcess(["--ctx-size", "8192"], tmp_path_factory.mktemp("page")).wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output()


# -- helpers -----------------------------------------------------------------------------------
def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: condition(), message)


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def answers(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".turn.assistant")


def answer_text(element) -> str:
    from selenium.webdriver.common.by import By

    return element.find_element(By.CSS_SELECTOR, ".body").get_attribute("textContent")


def open_page(driver, url: str, key: str | None = None) -> None:
    """Load the page, enter ``key`` if the key dialog asks for it, wait until it knows the model."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    if key is not None:
        dialog = driver.find_element(By.ID, "key-dialog")
        wait_for(driver, lambda: dialog.get_attribute("open") is not None, "the key dialog did not open")
        driver.find_element(By.ID, "key-input").send_keys(key + "\n")
    wait_for(driver, lambda: driver.execute_script("return document.body.dataset.ready") == "true",
             "the page did not load /health")


def choose_settings(driver, temperature: str, max_tokens: str) -> None:
    """Open the settings panel and type the values (closed again afterwards)."""
    from selenium.webdriver.common.by import By

    summary = driver.find_element(By.CSS_SELECTOR, ".settings summary")
    summary.click()
    for field, value in (("temperature", temperature), ("max-tokens", max_tokens)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    summary.click()


def ask(driver, question: str) -> object:
    """Type ``question`` and press Enter; returns the new answer's element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(answers(driver))
    box = driver.find_element(By.ID, "prompt")
    box.send_keys(question)
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda: len(answers(driver)) == before + 1, "no answer appeared")
    return answers(driver)[-1]


def finished(driver, element) -> str:
    wait_for(driver, lambda: element.get_attribute("data-state") in ("done", "stopped", "error"),
             "the answer did not finish")
    return element.get_attribute("data-state")


def health(daemon: DaemonProcess, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(daemon.url + "/health", headers=headers, timeout=30).json()


# -- without a browser -------------------------------------------------------------------------
def test_the_page_and_its_files_load_without_the_key_but_the_api_does_not(daemon) -> None:
    page = httpx.get(daemon.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'name="neuro-auth-required" content="true"' in page.text and API_KEY not in page.text
    for name, kind in (("chat.js", "text/javascript"), ("markdown.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{daemon.url}/static/{name}", timeout=30)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), name
    # Only the listed files are public; anything else under /static/ stays behind the key.
    assert httpx.get(daemon.url + "/static/index.html", timeout=30).status_code == 401
    assert httpx.get(daemon.url + "/static/index.html", headers={"Authorization": f"Bearer {API_KEY}"},
                     timeout=30).status_code == 404
    assert httpx.get(daemon.url + "/health", timeout=30).status_code == 401
    assert httpx.post(daemon.url + "/", json={}, timeout=30).status_code == 401


def test_the_ready_line_prints_the_page_url(long_daemon) -> None:
    assert f"chat page at {long_daemon.url}/" in long_daemon.output()


# -- in Chromium -------------------------------------------------------------------------------
@needs_browser
def test_an_answer_streams_into_the_page_and_stop_cancels_it(browser, long_daemon) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, long_daemon.url)
    info = browser.find_element(By.ID, "model-info").text
    assert long_daemon.model_id in info and "8,192" in info
    cancelled = health(long_daemon)["cancelled"]

    # The daemon holds the answer after its first piece (a test pause point, released only by the
    # cancellation), so it is still streaming when Stop is pressed however busy the machine is.
    choose_settings(browser, "0", "8000")
    with long_daemon.pauses.hold("generation"):
        answer = ask(browser, "Tell me a very long story")
        wait_for(browser, lambda: answer.get_attribute("data-state") == "streaming" and answer_text(answer),
                 "no streamed text appeared")
        long_daemon.pauses.wait_reached("generation")
        # Text on the page while the answer is still being generated: it streams.
        assert answer.get_attribute("data-state") == "streaming", \
            "the answer finished before Stop could be pressed: " + answer.find_element(By.CSS_SELECTOR, ".stats").text
        stop = browser.find_element(By.ID, "stop")
        assert stop.is_displayed() and not browser.find_element(By.ID, "send").is_displayed()
        stop.click()

        assert finished(browser, answer) == "stopped"
        assert answer.find_element(By.CSS_SELECTOR, ".stats").text.startswith("stopped")
        wait_for(browser, lambda: health(long_daemon)["cancelled"] > cancelled,
                 "the daemon did not cancel the answer")
    wait_for(browser, lambda: not health(long_daemon)["queue"]["busy"], "the model is still busy")
    assert browser.find_element(By.ID, "send").is_displayed() and not stop.is_displayed()
    assert console_errors(browser) == []


@needs_browser
def test_api_key_prompt_history_and_new_chat(browser, daemon) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(daemon.url + "/")
    dialog = browser.find_element(By.ID, "key-dialog")
    wait_for(browser, lambda: dialog.get_attribute("open") is not None, "the key dialog did not open")
    key_input = browser.find_element(By.ID, "key-input")
    key_input.send_keys("not-the-key\n")
    wait_for(browser, lambda: "refused" in browser.find_element(By.ID, "key-error").text, "a wrong key was not refused")
    assert dialog.get_attribute("open") is not None
    browser.get_log("browser")  # the refused key's 401 is expected; later checks start clean
    key_input.send_keys(API_KEY + "\n")
    wait_for(browser, lambda: browser.execute_script("return document.body.dataset.ready") == "true",
             "the page did not load with the key")
    assert dialog.get_attribute("open") is None
    assert browser.execute_script("return localStorage.getItem('neuro-bitnet.api-key')") == API_KEY
    assert API_KEY not in browser.current_url

    browser.refresh()  # kept: no second prompt
    wait_for(browser, lambda: browser.execute_script("return document.body.dataset.ready") == "true",
             "the page did not reuse the stored key")
    assert browser.find_element(By.ID, "key-dialog").get_attribute("open") is None

    docs = browser.find_element(By.ID, "use-docs")
    if docs.is_displayed() and docs.is_selected():
        docs.click()  # plain turns: the prompt sizes below then compare like with like

    box = browser.find_element(By.ID, "prompt")
    ActionChains(browser).click(box).send_keys("line one").key_down(Keys.SHIFT).send_keys(Keys.ENTER) \
        .key_up(Keys.SHIFT).send_keys("line two").perform()
    assert box.get_attribute("value") == "line one\nline two" and not answers(browser)
    box.clear()

    choose_settings(browser, "0", "32")  # greedy: a sampled answer of the random model can show no text
    first = ask(browser, "Hello")
    assert finished(browser, first) == "done"
    second = ask(browser, "Hello")
    assert finished(browser, second) == "done"
    p1, p2 = (int(a.get_attribute("data-prompt-tokens")) for a in (first, second))
    assert p2 > p1, f"the second turn did not carry the first: {p1} then {p2} prompt tokens"
    assert "tokens/s" in second.find_element(By.CSS_SELECTOR, ".stats").text
    assert "first token" in second.find_element(By.CSS_SELECTOR, ".stats").text

    browser.find_element(By.ID, "new-chat").click()
    assert not answers(browser)
    third = ask(browser, "Hello")
    assert finished(browser, third) == "done"
    assert int(third.get_attribute("data-prompt-tokens")) == p1  # the history is gone
    assert console_errors(browser) == []


@needs_browser
def test_grounded_answers_cite_their_sources(browser, daemon) -> None:
    from selenium.webdriver.common.by import By

    if not health(daemon, API_KEY)["search"]:
        pytest.skip("the shared daemon has no --storage (onnx/onnxruntime missing)")
    open_page(browser, daemon.url, key=API_KEY)
    docs = browser.find_element(By.ID, "use-docs")
    assert docs.is_displayed() and docs.is_selected()
    answer = ask(browser, "Why does the dog bark at night?")
    assert finished(browser, answer) == "done"
    sources = [li.text for li in answer.find_elements(By.CSS_SELECTOR, ".sources li")]
    assert sources and "pets.md" in sources[0]
    # The model saw them: the grounded prompt is much longer than the bare question's.
    docs.click()
    plain = ask(browser, "Why does the dog bark at night?")
    assert finished(browser, plain) == "done"
    assert not plain.find_elements(By.CSS_SELECTOR, ".sources")
    assert console_errors(browser) == []


@needs_browser
def test_markdown_is_rendered_and_html_in_answers_is_not(browser, long_daemon) -> None:
    open_page(browser, long_daemon.url)
    render = "return window.NeuroMarkdown.render(arguments[0]);"
    html = browser.execute_script(render, "# Title\n\n**bold** and `a<b>`\n\n```python\nx = '<i>'\n```\n- one\n- two")
    assert "<strong>bold</strong>" in html and "<code>a&lt;b&gt;</code>" in html
    assert '<pre><code class="language-python" data-lang="python">x = &#39;&lt;i&gt;&#39;</code></pre>' in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    hostile = ('<img src=x onerror="window.pwned=1"> [x](javascript:alert(1)) '
               '<script>window.pwned=1</script> [ok](https://example.org/?a="b")')
    html = browser.execute_script(render, hostile)
    assert "<img" not in html and "<script" not in html and 'href="javascript' not in html
    assert '<a href="https://example.org/?a=&quot;b&quot;"' in html
    # And through the page: a hostile answer is shown as text.
    browser.execute_script("document.body.insertAdjacentHTML('beforeend', '<div id=t></div>');"
                           "document.getElementById('t').innerHTML = window.NeuroMarkdown.render(arguments[0]);",
                           hostile)
    assert browser.execute_script("return document.querySelectorAll('#t img, #t script').length") == 0
    assert console_errors(browser) == []


@needs_browser
def test_controls_are_labelled_keyboard_reachable_and_fit_narrow_and_dark(browser, long_daemon) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, long_daemon.url)
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, textarea, button, select')]
          .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
          .map(el => el.id || el.outerHTML);""")
    assert unlabelled == []
    # Tab from the message box reaches the send button; Shift+Tab walks back to the header controls.
    box = browser.find_element(By.ID, "prompt")
    box.click()
    box.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "send"
    reached = set()
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
        reached.add(browser.switch_to.active_element.get_attribute("id"))
    assert {"new-chat", "translate", "prompt"} <= reached

    browser.set_window_size(360, 700)  # a phone-sized window: nothing sticks out sideways
    wait_for(browser, lambda: browser.execute_script("return window.innerWidth") <= 360, "the window did not shrink")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.find_element(By.ID, "send").is_displayed()

    background = "return getComputedStyle(document.body).backgroundColor"
    light = browser.execute_script(background)
    dark = {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
    dark = browser.execute_script(background)
    assert light != dark
    channels = [int(c) for c in dark[dark.index("(") + 1:dark.index(")")].split(",")[:3]]
    assert max(channels) < 80, f"dark mode background is not dark: {dark}"
    assert console_errors(browser) == []
