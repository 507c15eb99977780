"""The live dashboard in a real browser against a real `trellis demo`.

The demo's simulated terminal trades EURUSD, GBPUSD and AUDUSD with ema_cross strategies on M1 bars of a clock
running 60x, so fills arrive within seconds. A trader signs in, sees fills arrive over the WebSocket, and stops
everything with the kill switch; the positions it held are closed. At phone width the panels stack.
"""

from __future__ import annotations

import time

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PANELS = [
    "panel-pnl",
    "panel-risk",
    "panel-quotes",
    "panel-positions",
    "panel-orders",
    "panel-strategies",
    "panel-fills",
    "panel-supervision",
]


def wait_for(driver, what: str, condition, timeout: float):
    """Polls `condition(driver)` until it answers something truthy; fails naming `what` after `timeout` s."""
    last_error: Exception | None = None

    def probe(d):
        nonlocal last_error
        try:
            return condition(d)
        except (StaleElementReferenceException, WebDriverException) as e:
            last_error = e
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(probe)
    except TimeoutException:
        detail = f" (last error: {last_error})" if last_error else ""
        raise AssertionError(f"waited {timeout:.0f} s for {what}{detail}") from None


def sign_in(driver, demo) -> None:
    driver.get(demo.url)
    email = wait_for(driver, "the sign-in form", lambda d: d.find_element(By.ID, "login-email"), 15)
    wait_for(driver, "the sign-in form to show", lambda d: email.is_displayed(), 15)
    email.send_keys(demo.email)
    driver.find_element(By.ID, "login-password").send_keys(demo.password)
    driver.find_element(By.ID, "login-submit").click()

    def signed_in_or_refused(d):
        if d.find_element(By.ID, "app-view").is_displayed():
            return "signed in"
        error = d.find_element(By.ID, "login-error")
        return error.is_displayed() and f"refused: {error.text}"

    outcome = wait_for(driver, "the dashboard after sign-in", signed_in_or_refused, 15)
    assert outcome == "signed in", f"sign-in as {demo.email} {outcome}"
    wait_for(
        driver,
        "the connection state `connected`",
        lambda d: d.find_element(By.ID, "connection-state").get_attribute("data-state") == "connected",
        30,
    )


def table_state(driver, table_id: str) -> dict:
    """The rows of a table (their keys) and the seq of the channel last rendered into it, read atomically."""
    return driver.execute_script(
        """
        const t = document.getElementById(arguments[0]);
        return {seq: t.dataset.seq === undefined ? null : Number(t.dataset.seq),
                keys: [...t.tBodies[0].rows].map((r) => r.dataset.key)};
        """,
        table_id,
    )


def uncaught_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Uncaught" in e.get("message", "")]


def test_a_signed_in_trader_sees_fills_live_and_the_kill_switch_flattens_positions(browser, demo, shoot):
    browser.set_window_size(1280, 800)
    sign_in(browser, demo)
    tenant = browser.find_element(By.ID, "tenant-name").text
    assert tenant == "demo", f"the header names tenant {tenant!r}"
    assert demo.email in browser.find_element(By.ID, "user-name").text

    # The fills snapshot, then a fill that was not in it: one that arrived over the WebSocket.
    first = wait_for(browser, "the fills snapshot", lambda d: (s := table_state(d, "fills-table"))["seq"] is not None and s, 30)
    before = set(first["keys"])
    live = wait_for(
        browser,
        "a fill to arrive live in the fills table",
        lambda d: [k for k in table_state(d, "fills-table")["keys"] if k not in before],
        60,
    )
    assert live, "no live fill"
    rows = browser.find_elements(By.CSS_SELECTOR, "#fills-table tbody tr")
    assert rows and rows[0].is_displayed()
    assert browser.find_element(By.ID, "kill-switch-state").text == "OFF"
    print("fills-live screenshot:", shoot(browser, "fills-live"))

    # Some position open, then the kill switch with its confirmation.
    wait_for(
        browser,
        "an open position in the positions table",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#positions-table tbody tr")) > 0,
        60,
    )
    kill = browser.find_element(By.ID, "kill-switch")
    assert kill.is_enabled(), "the kill switch button is disabled for a trader"
    kill.click()
    confirm = wait_for(
        browser,
        "the kill switch confirmation",
        lambda d: (b := d.find_element(By.ID, "kill-switch-confirm")).is_displayed() and b,
        5,
    )
    confirm.click()

    def killed_and_flat(d):
        state = d.find_element(By.ID, "kill-switch-state").text
        open_positions = len(d.find_elements(By.CSS_SELECTOR, "#positions-table tbody tr"))
        return state == "ON" and open_positions == 0

    wait_for(browser, "the kill switch to show ON and every position to be closed", killed_and_flat, 30)
    assert not browser.find_element(By.ID, "kill-switch-dialog").is_displayed()
    # Nothing trades while it is on: the book stays flat.
    time.sleep(3)
    assert killed_and_flat(browser), "a position opened again with the kill switch on"
    assert browser.find_element(By.ID, "connection-state").get_attribute("data-state") == "connected"
    print("kill-switch screenshot:", shoot(browser, "kill-switch-on"))
    assert uncaught_errors(browser) == []


def test_the_dashboard_fits_a_phone_screen_with_its_panels_stacked(browser, demo, shoot):
    browser.set_window_size(390, 844)
    sign_in(browser, demo)
    wait_for(browser, "the fills snapshot", lambda d: table_state(d, "fills-table")["seq"] is not None, 30)
    wait_for(
        browser,
        "the strategies",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strategies-table tbody tr")) >= 3,
        30,
    )
    width = browser.execute_script("return window.innerWidth")
    assert width <= 420, f"the window is {width} px wide, not a phone's"
    lefts = []
    for panel in PANELS:
        el = browser.find_element(By.ID, panel)
        assert el.is_displayed(), f"#{panel} is not visible at phone width"
        rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];", el)
        assert rect[0] >= -1 and rect[1] <= width + 1, f"#{panel} spans {rect} in a {width} px window"
        lefts.append(round(rect[0]))
    assert len(set(lefts)) == 1, f"the panels do not stack in one column: left edges {lefts}"
    scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll_width <= width + 1, f"the page overflows horizontally: {scroll_width} px in a {width} px window"
    assert browser.find_element(By.ID, "kill-switch").is_displayed()
    print("phone screenshot:", shoot(browser, "phone"))
    assert uncaught_errors(browser) == []
