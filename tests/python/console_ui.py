"""The web console in headless Chromium, driven by Selenium through Debian's chromedriver.

Run by tests/console.rs against a real `model serve --api-key K --mcp-config ...` with an empty store:
gives the key when the page asks, pulls PULL_REFERENCE from the test registry and watches the progress
bar reach 100%, chats with that model (streamed answer, stats, stop), calls server-everything's echo
tool from the form generated from its schema, watches the metrics charts take new samples, saves a
screenshot of each page into SCREENSHOT_DIR and runs axe-core in each page (no serious or critical
violations). Every wait is bounded.
"""

import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
KEY = os.environ["API_KEY"]
REFERENCE = os.environ["PULL_REFERENCE"]
SHOTS = os.environ["SCREENSHOT_DIR"]
AXE = open(os.environ["AXE_SCRIPT"], encoding="utf-8").read()
STARTED = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def wait(driver, condition, seconds, what):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        shot = os.path.join(SHOTS, "failure.png")
        driver.save_screenshot(shot)
        status = driver.execute_script("return document.querySelector('#status').textContent")
        sys.exit(f"timed out after {seconds}s waiting for {what} (status line: {status!r}; screenshot {shot})")


def text(driver, selector):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def go(driver, page):
    driver.execute_script("location.hash = arguments[0]", "#" + page)
    wait(driver, lambda d: d.find_element(By.ID, "page-" + page).is_displayed(), 10, f"the {page} page")


def axe_check(driver, page):
    driver.execute_script(AXE)
    violations = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ["violations"]})
          .then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
              targets: v.nodes.slice(0, 4).map((n) => n.target.join(" "))}))))
          .catch((e) => done([{id: "axe-error", impact: "critical", help: String(e), targets: []}]));
        """
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    for v in violations:
        log(f"axe {page}: {v['impact']} {v['id']}: {v['help']} {v['targets']}")
    assert not serious, f"axe-core found serious violations on the {page} page: {serious}"
    log(f"axe {page}: {len(violations)} minor violations, none serious")


def shot(driver, name):
    path = os.path.join(SHOTS, name + ".png")
    driver.save_screenshot(path)
    log(f"screenshot {path}")


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ["CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,820", "--force-color-profile=srgb", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ["CHROMEDRIVER"]), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(60)
    try:
        run(driver)
    finally:
        logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
        for entry in logs:
            if entry.get("level") == "SEVERE" and "401" not in entry.get("message", ""):
                log(f"browser console: {entry['message']}")
        driver.quit()


def run(driver):
    driver.get(URL)
    # The server wants a key: the page asks once and keeps it in sessionStorage.
    wait(driver, lambda d: d.find_element(By.ID, "key-dialog").get_attribute("open") is not None, 15,
         "the API key dialog")
    driver.find_element(By.ID, "key-input").send_keys(KEY)
    driver.find_element(By.ID, "key-save").click()
    wait(driver, lambda d: d.execute_script("return sessionStorage.getItem('model-runner.api-key')") == KEY,
         5, "the key in sessionStorage")
    log("API key given")

    # Models: pull from the test registry; the bar reaches 100% and the model is listed.
    go(driver, "models")
    driver.find_element(By.ID, "pull-ref").send_keys(REFERENCE)
    driver.find_element(By.ID, "pull-button").click()
    seen = set()

    def pulled(d):
        seen.add(d.find_element(By.ID, "pull-progress").get_attribute("value"))
        return text(d, "#pull-percent") == "100%"

    wait(driver, pulled, 90, "the pull's progress to reach 100%")
    wait(driver, lambda d: REFERENCE in text(d, "#models-table tbody"), 10, "the pulled model in the table")
    assert "Pull failed" not in text(driver, "#pull-message"), text(driver, "#pull-message")
    log(f"pulled {REFERENCE}; progress values seen: {sorted(seen, key=float)}")

    # Chat: the streamed answer, its stats, then a long answer stopped midway.
    go(driver, "chat")
    wait(driver, lambda d: REFERENCE in [o.get_attribute("value") for o in
                                         d.find_elements(By.CSS_SELECTOR, "#chat-model option")], 10,
         "the pulled model in the picker")
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys("Write one short sentence about the sea.", Keys.ENTER)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .stats"), 120, "the answer to finish")
    answer = text(driver, ".message.assistant .answer")
    errors = text(driver, ".message.assistant .error")
    stats = text(driver, ".message.assistant .stats")
    assert answer.strip() and not errors, f"answer {answer!r}, error {errors!r}"
    assert "tokens/s" in stats and "TTFT" in stats, stats
    log(f"answer: {answer[:120]!r} ({stats})")

    # A long answer to stop: greedy decoding and a prompt the default model answers at length (at 0.7 it
    # may answer "Count to 2000" with one line).
    driver.find_element(By.ID, "chat-max-tokens").clear()
    driver.find_element(By.ID, "chat-max-tokens").send_keys("4000")
    driver.find_element(By.ID, "chat-temperature").clear()
    driver.find_element(By.ID, "chat-temperature").send_keys("0")
    prompt.send_keys("Write a very long story about a dragon and a knight, at least 2000 words.", Keys.ENTER)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant .answer")) == 2
         and len(d.find_elements(By.CSS_SELECTOR, ".message.assistant .answer")[1].text) > 20, 60,
         "the second answer to stream")
    # Another page and back while it streams: the chat is drawn afresh and the answer goes on growing in
    # the new drawing (it once went on in a detached node and never showed again).
    driver.execute_script("window.drawnAnswer = document.querySelector('.message.assistant:nth-of-type(4)')")
    go(driver, "models")
    go(driver, "chat")
    wait(driver, lambda d: d.execute_script("return !window.drawnAnswer.isConnected"), 10,
         "the chat to be drawn again")
    shown = len(text(driver, ".message.assistant:nth-of-type(4) .answer"))
    wait(driver, lambda d: len(text(d, ".message.assistant:nth-of-type(4) .answer")) > shown + 20, 30,
         "the answer to go on streaming in the chat drawn again")
    log(f"the answer went on streaming after the chat was drawn again ({shown} characters then)")
    driver.find_element(By.ID, "stop").click()
    wait(driver, lambda d: "stopped" in text(d, ".message.assistant:nth-of-type(4) .stats"), 15,
         "the stopped answer")
    assert driver.find_element(By.ID, "send").is_enabled()
    log("stopped a streaming answer")
    saved = driver.execute_script("return JSON.parse(localStorage.getItem('model-runner.conversations'))[0]")
    assert len(saved["messages"]) == 4, saved
    shot(driver, "chat")
    axe_check(driver, "chat")

    # MCP: servers, tools with their forms; call echo from its form.
    go(driver, "mcp")
    wait(driver, lambda d: "everything: running" in text(d, "#mcp-servers"), 30, "the everything server")
    tool = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'details[data-tool="everything__echo"]'),
                30, "the echo tool")[0]
    tool.find_element(By.TAG_NAME, "summary").click()
    tool.find_element(By.CSS_SELECTOR, 'input[name="message"]').send_keys("hello from the console")
    tool.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: "hello from the console" in tool.find_element(By.CSS_SELECTOR, ".result").text,
         30, "the echo result")
    assert tool.find_element(By.CSS_SELECTOR, ".result").get_attribute("data-outcome") == "ok"
    wait(driver, lambda d: "everything__echo" in text(d, "#mcp-log tbody"), 5, "the call in the log")
    log(f"called everything__echo: {tool.find_element(By.CSS_SELECTOR, '.result').text!r}")
    shot(driver, "mcp")
    axe_check(driver, "mcp")

    # Models page again, now with the model loaded (from the chat).
    go(driver, "models")
    wait(driver, lambda d: REFERENCE in text(d, "#loaded-table tbody"), 10, "the loaded model")
    shot(driver, "models")
    axe_check(driver, "models")

    # Metrics: charts take new samples every two seconds; the chat's tokens and the MCP call show.
    go(driver, "metrics")
    scrapes = int(driver.find_element(By.ID, "charts").get_attribute("data-scrapes") or 0)
    wait(driver, lambda d: int(d.find_element(By.ID, "charts").get_attribute("data-scrapes") or 0) >= scrapes + 2,
         15, "two more metrics scrapes")
    peaks = driver.execute_script(
        "return {tokens: Math.max(0, ...samples.tokens[0].map(p => p[1])),"
        " kv: Math.max(0, ...samples.kv[1].map(p => p[1])),"
        " mcp: Math.max(0, ...samples.mcp[0].map(p => p[1]))}")
    assert peaks["tokens"] > 0 and peaks["kv"] > 0 and peaks["mcp"] > 0, peaks
    assert "tokens/s" in text(driver, "#chart-tokens-value")
    log(f"metrics peaks: {peaks}")
    shot(driver, "metrics")
    axe_check(driver, "metrics")

    # Dark theme: the same pages stay readable.
    driver.find_element(By.ID, "theme-button").click()
    wait(driver, lambda d: d.execute_script("return document.documentElement.dataset.theme") == "dark", 5,
         "the dark theme")
    shot(driver, "metrics-dark")
    axe_check(driver, "metrics (dark)")
    go(driver, "chat")
    shot(driver, "chat-dark")
    axe_check(driver, "chat (dark)")
    log("done")


if __name__ == "__main__":
    main()
