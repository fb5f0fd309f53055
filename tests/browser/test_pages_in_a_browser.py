"""A person's path through the pages, in headless Chromium, with a real cluster and endpoint."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from llmqueue.jobs import job_submit
from llmqueue.models import Job, Status
from tests.browser.conftest import log_in, screenshot
from tests.factories import chat_spec, make_endpoint, make_user
from tests.fixtures import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_submit_from_the_form_and_watch_it_succeed(page, live_server, cluster, standin):
    make_endpoint(name="stand-in", base_url=standin.base_url)
    standin.control(latency_ms=300)  # slow enough to see the job before it finishes
    user = make_user()
    cluster()
    log_in(page, live_server.url, user)
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()

    page.get_by_role("link", name="Submit").click()
    page.get_by_label("Model").select_option("echo")
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_role("button", name="Add a turn").click()  # a second, empty turn row
    page.get_by_label("Turn 1 role").select_option("user")
    page.locator("#turn-content-1").fill("Earlier question")
    page.get_by_label("Turn 2 role").select_option("assistant")
    page.locator("#turn-content-2").fill("Earlier answer")
    page.get_by_label("Message").fill("Hello from the browser")
    page.get_by_label("Priority").fill("7")
    page.get_by_role("button", name="Submit", exact=True).click()

    job = Job.objects.get()
    page.wait_for_url(f"{live_server.url}/jobs/{job.pk}/")
    # The page follows the job by itself (no reload by us) until it is done.
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#answer")).to_have_text("echo: Hello from the browser")
    expect(page.get_by_text("Earlier answer", exact=True)).to_be_visible()
    page.get_by_text("Result as JSON").click()
    expect(page.locator("#result-json")).to_contain_text('"choices"')
    assert job.payload["messages"][1:3] == [
        {"role": "user", "content": "Earlier question"},
        {"role": "assistant", "content": "Earlier answer"},
    ]
    screenshot(page, "job-page")

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator('[data-bind="depth.succeeded"]')).to_have_text("1")
    expect(page.locator("#endpoint-rows")).to_contain_text("stand-in")
    expect(page.locator(".updated")).to_contain_text("Updated", timeout=10_000)  # it polled
    assert page.locator("figure.chart svg path").count() >= 1  # a line was drawn
    screenshot(page, "dashboard")


def test_upload_a_jsonl_batch_and_watch_it_complete(page, live_server, cluster, standin, tmp_path):
    make_endpoint(name="stand-in", base_url=standin.base_url)
    standin.control(latency_ms=50)
    user = make_user()
    lines = [
        {"model": "echo", "messages": [{"role": "user", "content": f"plain {i}"}]}
        for i in range(10)
    ] + [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/embeddings" if i % 2 else "/v1/chat/completions",
            "body": {"model": "echo", "input": f"vec {i}"}
            if i % 2
            else {"model": "echo", "messages": [{"role": "user", "content": f"api {i}"}]},
        }
        for i in range(10)
    ]
    file = tmp_path / "requests.jsonl"
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    log_in(page, live_server.url, user, "/batches/new/")
    page.get_by_label("JSONL file").set_input_files(str(file))
    page.get_by_label("Name").fill("twenty")
    page.get_by_role("button", name="Upload and queue").click()
    expect(page.get_by_role("heading", name="twenty")).to_be_visible()
    expect(page.get_by_text("Queued 20 jobs.")).to_be_visible()
    cluster()
    # The progress bar and counts follow the batch live.
    expect(page.locator("#batch-summary")).to_have_text("20 of 20 finished (100%).", timeout=60_000)
    expect(page.locator("#batch-progress")).to_have_attribute("value", "20")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download results (JSONL)").click()
    results = [json.loads(line) for line in download.value.path().read_text().splitlines()]
    assert len(results) == 20 and all(r["error"] is None for r in results)
    by_id = {r["custom_id"]: r for r in results}
    assert by_id["req-0"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: api 0"
    assert by_id["req-1"]["response"]["body"]["object"] == "list"  # an embedding
    screenshot(page, "batch-page")


def test_retry_a_dead_letter_from_the_admin(page, live_server, cluster, standin):
    make_endpoint(name="stand-in", base_url=standin.base_url)
    owner = make_user()
    staff = make_user(staff=True)
    standin.control(status=503)
    job, _ = job_submit(owner=owner, spec=chat_spec("try me", max_attempts=1))
    cluster()
    wait_until(lambda: Job.objects.get(pk=job.pk).status == Status.DEAD, timeout=30, what="dead")
    standin.control(status=0)  # the endpoint is back

    log_in(page, live_server.url, staff, "/admin/llmqueue/deadletter/")
    expect(page.get_by_role("heading", name="Dead letters by error")).to_be_visible()
    page.locator(f'input[name="_selected_action"][value="{job.pk}"]').check()
    page.get_by_label("Action:").select_option("retry_selected")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_text("Queued 1 job(s) again.")).to_be_visible()

    page.goto(f"{live_server.url}/admin/llmqueue/job/{job.pk}/change/")

    def succeeded() -> bool:
        page.reload()
        return "succeeded" in page.locator(".field-status").inner_text()

    wait_until(succeeded, timeout=30, interval=0.5, what="the retried job to succeed")
    expect(page.locator(".fieldBox.field-attempts .readonly")).to_have_text("1")
    expect(page.locator(".form-row.field-endpoint_link a")).to_have_text("stand-in")
    screenshot(page, "admin-retried-job")


def test_keyboard_and_a_narrow_screen(page, live_server, transactional_db):
    make_endpoint(name="a-rather-long-endpoint-name-for-a-phone")
    user = make_user()
    for i in range(3):
        job_submit(owner=user, spec=chat_spec(f"job {i} " + "word " * 30))
    page.set_viewport_size({"width": 360, "height": 740})
    log_in(page, live_server.url, user)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    for path in ["/", "/jobs/", f"/jobs/{Job.objects.first().pk}/", "/jobs/new/", "/batches/"]:
        page.goto(live_server.url + path)
        expect(page.locator("h1")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
    screenshot(page, "jobs-narrow")
