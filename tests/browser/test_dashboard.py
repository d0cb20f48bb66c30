"""The dashboard (issue 10) in a real browser. Skipped until its package, receiver.web, exists.

What these tests assume of the pages, beyond the ids in the issue: the sign-in token is the API token; the jobs
table links each row to its job page; the gallery is at /gallery; a job's entries in #chain carry data-job-id.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.support import ENABLE, dashboard_present, screenshot
from tests.e2e.conftest import API_TOKEN

sync_api = pytest.importorskip("playwright.sync_api", reason=ENABLE)
expect = sync_api.expect

pytestmark = pytest.mark.skipif(not dashboard_present(), reason="the dashboard (receiver.web) is not built yet")


def sign_in(page) -> None:
    page.goto("/login")
    form = page.locator("form#login")
    form.locator('input[name="token"]').fill(API_TOKEN)
    form.locator('[type="submit"]').click()
    expect(page).not_to_have_url(re.compile(r"/login"))


def row_of(page, job_id: str):
    return page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')


def status_of(page, job_id: str):
    """The element carrying the row's data-status: the row itself or one of its cells."""
    row = f'#jobs-table tr[data-job-id="{job_id}"]'
    return page.locator(f"{row}[data-status], {row} [data-status]").first


def downloaded(job) -> bool:
    return job["status"] == "succeeded" and all(video["status"] == "downloaded" for video in job["videos"])


def test_signing_in_through_the_form_opens_the_overview(page):
    page.goto("/")
    expect(page.locator("form#login")).to_be_visible()  # the overview is not shown to a stranger

    sign_in(page)

    expect(page.locator("form#login")).to_have_count(0)
    page.goto("/jobs")
    expect(page.locator("#jobs-table")).to_be_visible()
    page.goto("/")
    screenshot(page, "overview")


def test_wrong_token_stays_on_the_form(page):
    page.goto("/login")
    page.locator('form#login input[name="token"]').fill("not-the-token")
    page.locator('form#login [type="submit"]').click()
    expect(page.locator("form#login")).to_be_visible()
    page.goto("/jobs")
    expect(page.locator("#jobs-table")).to_have_count(0)


def test_a_job_appears_and_changes_status_without_a_reload(new_page, start_reelhook):
    reelhook = start_reelhook(auto_deliver=False)  # the job waits until the test has the simulator call back
    page = new_page(reelhook.url)
    sign_in(page)
    page.goto("/jobs")
    expect(page.locator("#jobs-table")).to_be_visible()
    page.evaluate("() => { window.reelhookNoReload = true }")  # gone if the page reloads or navigates

    job = reelhook.submit("a job the table learns of")

    expect(row_of(page, job["id"])).to_be_visible()
    expect(status_of(page, job["id"])).to_have_attribute("data-status", re.compile(r"^(queued|submitted|running)$"))

    reelhook.deliver(job["id"])

    expect(status_of(page, job["id"])).to_have_attribute("data-status", "succeeded")
    # Once its files are downloaded and its poster made, the row's placeholder becomes the poster, still no reload.
    poster = row_of(page, job["id"]).locator("img.poster")
    expect(poster).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=poster.element_handle())
    assert page.evaluate("() => window.reelhookNoReload") is True


def test_a_job_page_shows_timeline_and_chain_and_extends(page, reelhook):
    job = reelhook.submit("a job to extend")
    reelhook.wait_for_job(job["id"], downloaded)
    sign_in(page)
    page.goto("/jobs")
    row_of(page, job["id"]).locator("a").first.click()

    expect(page.locator("#timeline")).to_be_visible()
    expect(page.locator("#chain")).to_be_visible()
    expect(page.locator(f'#chain [data-job-id="{job["id"]}"]')).to_have_count(1)

    page.on("dialog", lambda dialog: dialog.accept())  # in case the page asks before spending money
    page.locator('button[data-action="extend"][data-index="0"]').click()

    children = reelhook.wait_for_children(job["id"], lambda child: child["provider_job_id"] is not None)
    assert [child["action"] for child in children] == ["extend"]
    expect(page.locator(f'#chain [data-job-id="{children[0]["id"]}"]')).to_be_visible()
    parent = reelhook.job(job["id"])
    assert [(body["jobId"], body["index"]) for body in reelhook.deployment.extends()] == [
        (parent["provider_job_id"], 0)
    ]
    screenshot(page, "job-chain")


def test_the_gallery_plays_a_video(page, reelhook):
    job = reelhook.submit("a job for the gallery")
    reelhook.wait_for_job(job["id"], downloaded)
    sign_in(page)
    page.goto("/gallery")

    video = page.locator(f'video[data-job-id="{job["id"]}"]').first
    expect(video).to_be_attached()
    video.evaluate("v => { v.muted = true; return v.play() }")
    page.wait_for_function("v => v.currentTime > 0.2", arg=video.element_handle())

    assert video.evaluate("v => v.error") is None
    screenshot(page, "gallery")
