"""The search page at GET / in a real headless browser (Debian's chromium + chromedriver, via selenium).

The app runs behind a real uvicorn socket on loopback; the browser types a query, ticks rerank and
waits for both result columns. Skips (with the install line) where chromium is not installed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kd.params import load_params
from service.app import create_app
from service.settings import Settings
from tests.browser_fixtures import free_port, needs_chromium
from tests.service_fixtures import teacher_corpus_dir

pytestmark = [needs_chromium, pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server_url(smoke_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    params = load_params(smoke_repo / "params.yaml")
    params = replace(params, service=replace(params.service, rerank=True))
    tc = teacher_corpus_dir(smoke_repo, params, tmp_path_factory.mktemp("teacher_corpus"))
    app = create_app(
        Settings(smoke_repo / "artifacts/student", smoke_repo / "artifacts/index", params, teacher_corpus_dir=tc)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_page_search_side_by_side(server_url: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    assert browser.title == "kd-search"
    box = browser.find_element(By.ID, "query")
    box.send_keys("Why is it called Python?")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("4")
    rerank = browser.find_element(By.ID, "rerank")
    assert rerank.is_selected()  # on by default when the server has a teacher
    browser.find_element(By.ID, "go").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rerank-results li.hit")) == 4)
    student = browser.find_elements(By.CSS_SELECTOR, "#student-results li.hit")
    reranked = browser.find_elements(By.CSS_SELECTOR, "#rerank-results li.hit")
    assert len(student) == 4 and len(reranked) == 4
    first = student[0]
    assert first.find_element(By.CLASS_NAME, "title").text
    assert first.find_element(By.CLASS_NAME, "snippet").text
    assert first.find_element(By.CLASS_NAME, "score").text.startswith("score ")
    assert "(#" in reranked[0].find_element(By.CLASS_NAME, "moved").text or "not in" in reranked[0].text
    assert "ms" in browser.find_element(By.ID, "student-latency").text
    assert "ms" in browser.find_element(By.ID, "rerank-latency").text
    assert browser.find_element(By.ID, "rerank-col").is_displayed()

    # rerank off: one column; an over-long k is refused by the API and shown, not swallowed
    rerank.click()
    browser.find_element(By.ID, "go").click()
    wait.until(ec.invisibility_of_element_located((By.ID, "rerank-col")))
    browser.execute_script("document.getElementById('k').max = '1000'; document.getElementById('k').value = '500';")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: "service.max_k" in d.find_element(By.ID, "status").text)
