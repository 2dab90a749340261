"""The work dir's listing under attack, through the API and a real sandbox of each
factory: hard links of a sparse file, many sparse files (no space used, their apparent
size to hash) and names that are not UTF-8 (skipped entries) never make the listing
slow or unbounded. The executor hashes each file once, within a budget of a few times
the work dir's size, and lists at most ``LISTING_CAP`` entries, the skipped included.
"""

from __future__ import annotations

import httpx
import pytest

from app.domain.exec.staging import LISTING_CAP
from tests.conftest import RunningApp
from tests.security.sandbox_checks import assert_sandbox_posture

pytestmark = pytest.mark.attack("resource exhaustion")

BUDGET_REASON = "sparse files count at their apparent size"


@pytest.fixture(scope="module", autouse=True)
def _posture(api: RunningApp) -> None:
    with api.client() as http:
        assert_sandbox_posture(http)


def _run(client: httpx.Client, code: str) -> dict[str, object]:
    body: dict[str, object] = client.post(
        "/exec", json={"lang": "py", "code": code, "timeout": 30}).json()
    return body


def _healthy_after(client: httpx.Client) -> None:
    body = client.post("/exec", json={"lang": "bash", "code": "echo still-fine"}).json()
    assert body["stdout"] == "still-fine\n", body


def _made(client: httpx.Client, code: str) -> list[dict[str, object]]:
    """Run ``code`` (which prints ``made``); the answer's ``skipped_files``."""
    body = _run(client, code)
    assert body["stdout"] == "made\n" and body["status"] == "ok", body
    skipped = body["skipped_files"]
    assert isinstance(skipped, list)
    return skipped


def test_hard_links_of_a_sparse_file_are_hashed_once(client: httpx.Client,
                                                     api: RunningApp) -> None:
    size = api.settings.sandbox_workdir_mb * 1024 * 1024  # the file-size limit: allowed
    skipped = _made(client, (
        "import os\nos.chdir('/mnt/data')\n"
        f"with open('s0000', 'wb') as f:\n    f.truncate({size})\n"
        "for i in range(1, 1000):\n    os.link('s0000', f's{i:04d}')\nprint('made')\n"))
    assert len(skipped) == LISTING_CAP
    assert not [entry for entry in skipped if BUDGET_REASON in str(entry["reason"])]
    assert all(entry["size"] == size for entry in skipped)  # too large to keep, each
    _healthy_after(client)


def test_many_sparse_files_spend_the_hashing_budget(client: httpx.Client,
                                                    api: RunningApp) -> None:
    size = api.settings.sandbox_workdir_mb * 1024 * 1024
    skipped = _made(client, (
        "import os\nos.chdir('/mnt/data')\nfor i in range(1000):\n"
        f"    with open(f's{{i:04d}}', 'wb') as f:\n        f.truncate({size})\n"
        "print('made')\n"))
    assert len(skipped) == LISTING_CAP
    over_budget = [entry for entry in skipped if BUDGET_REASON in str(entry["reason"])]
    assert len(over_budget) == LISTING_CAP - 4, "a budget of four times the work dir"
    _healthy_after(client)


def test_names_that_are_not_utf8_count_toward_the_listing_cap(client: httpx.Client) -> None:
    skipped = _made(client, (
        "import os\nfor i in range(5000):\n"
        "    name = b'/mnt/data/%05d' % i + b'\\xff' * 250\n"
        "    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600))\nprint('made')\n"))
    assert len(skipped) == LISTING_CAP, "5000 bad names, 1000 entries"
    assert all("not valid UTF-8" in str(entry["reason"]) for entry in skipped)
    _healthy_after(client)
