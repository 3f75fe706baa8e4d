"""The chat page in headless Chromium (through chromedriver): type a message, send it, and
wait for the streamed answer. Saves a screenshot to $SCREENSHOT.

Run by tests/serve/main.rs with POWERINFER_URL and SCREENSHOT set.
"""

import os
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

os.environ.setdefault("SE_OFFLINE", "true")  # never download a driver or browser
opts = Options()
opts.binary_location = shutil.which("chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=900,640"):
    opts.add_argument(arg)
driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
try:
    driver.get(os.environ["POWERINFER_URL"] + "/")
    assert driver.title == "powerinfer chat", driver.title
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "model").text.startswith("SmolLM2"))
    driver.find_element(By.ID, "input").send_keys("What is the capital of France?")
    driver.find_element(By.ID, "send").click()
    # Answered when the tokens/s line appears under the answer. A seven-token answer takes well
    # under a second, but the serve tests run side by side on two cores, with Chromium
    # starting meanwhile: the bound is generous so that only a real hang fails.
    WebDriverWait(driver, 240).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".stats") or d.find_elements(By.CSS_SELECTOR, ".error"))
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error")]
    assert not errors, errors
    user = driver.find_element(By.CSS_SELECTOR, ".msg.user").text
    assert user == "What is the capital of France?", user
    bubble = driver.find_element(By.CSS_SELECTOR, ".msg.assistant")
    answer = bubble.text
    chunks = int(bubble.get_attribute("data-chunks"))
    stats = driver.find_element(By.CSS_SELECTOR, ".stats").text
    assert answer.strip(), "empty answer"
    # Streamed: the bubble was updated piece by piece, not once at the end.
    assert chunks > 1, chunks
    assert "tok/s" in stats, stats
    driver.save_screenshot(os.environ["SCREENSHOT"])
    print(f"chat page: {chunks} streamed pieces, {stats!r}; screenshot {os.environ['SCREENSHOT']}")
finally:
    driver.quit()
