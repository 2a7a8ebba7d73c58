"""Drives Debian's headless Chromium for collector/tests/console.rs.

One browser per process (its HOME, with the NSS database holding the client
certificate, comes from the environment). Commands arrive as JSON lines on
stdin; each gets one JSON line on stdout: {"ok": ...} or {"error": "..."}.
The test makes every assertion; this only does what it is told.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By


def browser(user_data_dir, downloads):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1440,1000", "--user-data-dir=" + user_data_dir]:
        o.add_argument(a)
    o.add_experimental_option("prefs", {"download.default_directory": downloads,
                                        "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.set_page_load_timeout(60)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return d


def fresh(read):
    """read(), again if the element it found was replaced before it was read
    (a page loading after a click, a live page updating): at most 5 s."""
    end = time.monotonic() + 5
    while True:
        try:
            return read()
        except StaleElementReferenceException:
            if time.monotonic() >= end:
                raise
            time.sleep(0.1)


def page(d):
    return fresh(lambda: {"url": d.current_url, "title": d.title, "text": d.find_element(By.TAG_NAME, "body").text})


def run(d, c):
    op = c["op"]
    if op == "open":
        d.get(c["url"])
        return page(d)
    if op == "page":
        return page(d)
    if op == "text":
        return fresh(lambda: d.find_element(By.CSS_SELECTOR, c["css"]).text)
    if op == "count":
        return len(d.find_elements(By.CSS_SELECTOR, c["css"]))
    if op == "type":
        e = d.find_element(By.CSS_SELECTOR, c["css"])
        e.clear()
        e.send_keys(c["value"])
        return None
    if op == "select":
        d.find_element(By.CSS_SELECTOR, c["css"] + " option[value='" + c["value"] + "']").click()
        return None
    if op == "click":
        d.find_element(By.CSS_SELECTOR, c["css"]).click()
        return page(d)
    if op == "wait_text":
        # Bounded: at most c["secs"] seconds, polling the element's text.
        end = time.monotonic() + c["secs"]
        last = ""
        while time.monotonic() < end:
            try:
                es = d.find_elements(By.CSS_SELECTOR, c["css"])
                last = es[0].text if es else ""
            except StaleElementReferenceException:  # replaced by a live update: poll again
                continue
            if c["needle"] in last:
                return last
            time.sleep(0.2)
        raise RuntimeError("no %r in %s within %ss (last: %r)" % (c["needle"], c["css"], c["secs"], last[:300]))
    if op == "screenshot":
        d.save_screenshot(c["path"])
        return None
    raise RuntimeError("unknown op " + op)


def main():
    d = browser(sys.argv[1], sys.argv[2])
    print(json.dumps({"ok": "ready"}), flush=True)
    try:
        for line in sys.stdin:
            c = json.loads(line)
            if c["op"] == "quit":
                break
            try:
                out = {"ok": run(d, c)}
            except Exception as e:  # reported to the test, which fails with it
                out = {"error": "%s: %s" % (type(e).__name__, e)}
            print(json.dumps(out), flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
