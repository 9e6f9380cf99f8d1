"""Takes the README's screenshots of the web console (docs/console-{chat,models,mcp,metrics}.png).

Run against a real `model serve` with the default model stored and, for the MCP page, a gateway with the
reference server `server-everything` (see tests/console.rs for the same set-up):

    .venv/bin/python scripts/console-screenshots.py http://127.0.0.1:12434/ [API_KEY]

It drives Debian's headless Chromium through chromedriver (scripts/setup-tests.sh installs both): asks the
model for a short answer with code, calls the echo tool from its form, and waits for the metrics charts
to hold a few samples. Every wait is bounded.
"""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:12434/"
KEY = sys.argv[2] if len(sys.argv) > 2 else ""
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def wait(driver, condition, seconds, what):
    WebDriverWait(driver, seconds, poll_frequency=0.2, ignored_exceptions=(Exception,)).until(
        condition, f"timed out waiting for {what}")


def go(driver, page):
    driver.execute_script("location.hash = arguments[0]", "#" + page)
    wait(driver, lambda d: d.find_element(By.ID, "page-" + page).is_displayed(), 10, f"the {page} page")


def shot(driver, page):
    driver.execute_script("document.activeElement?.blur()")
    path = os.path.normpath(os.path.join(OUT, f"console-{page}.png"))
    driver.save_screenshot(path)
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,760", "--force-color-profile=srgb", "--hide-scrollbars",
                "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    try:
        driver.get(URL)
        if KEY:
            driver.execute_script("sessionStorage.setItem('model-runner.api-key', arguments[0])", KEY)
        driver.execute_script("localStorage.clear()")
        driver.get(URL)
        go(driver, "chat")
        wait(driver, lambda d: d.find_element(By.ID, "chat-model").get_attribute("value"), 15, "a model")
        driver.find_element(By.ID, "chat-settings").find_element(By.TAG_NAME, "summary").click()
        driver.find_element(By.ID, "prompt").send_keys(
            "Write a Python function that adds two numbers, with a one-line explanation.", Keys.ENTER)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .stats"), 180, "the answer")
        shot(driver, "chat")

        go(driver, "mcp")
        tool = None
        try:
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'details[data-tool="everything__echo"]'),
                 30, "the echo tool")
            tool = driver.find_element(By.CSS_SELECTOR, 'details[data-tool="everything__echo"]')
        except Exception:
            print("no everything__echo tool: the MCP page is shot as it is")
        if tool is not None:
            tool.find_element(By.TAG_NAME, "summary").click()
            tool.find_element(By.CSS_SELECTOR, 'input[name="message"]').send_keys("hello from the console")
            tool.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait(driver, lambda d: tool.find_element(By.CSS_SELECTOR, ".result").get_attribute("data-outcome"),
                 30, "the echo result")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tool)
        shot(driver, "mcp")

        go(driver, "models")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#loaded-table tbody tr td.mono"), 10,
             "the loaded model")
        shot(driver, "models")

        go(driver, "metrics")
        Select(driver.find_element(By.ID, "metrics-window")).select_by_value("1")
        # Some traffic for the charts: a few short chats and tool calls, one after another.
        driver.set_script_timeout(240)
        driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const model = current().model;
            const pause = (ms) => new Promise((r) => setTimeout(r, ms));
            (async () => {
              for (const topic of ["the sea", "a mountain", "the wind", "a city", "the moon"]) {
                const response = await api("/v1/chat/completions", {method: "POST", body: {model,
                  max_tokens: 48, messages: [{role: "user", content: `One sentence about ${topic}.`}]}});
                await response.text();
                await mcp.request("tools/call", {name: "everything__echo", arguments: {message: topic}})
                  .catch(() => {});
                await pause(3000);
              }
            })().then(() => done(true), (e) => done(String(e)));
        """)
        time.sleep(4)  # two more scrapes
        shot(driver, "metrics")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
