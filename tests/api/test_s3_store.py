"""The S3 path: the same file store against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from app.storage import FileMeta, FileStore, create_object_store
from tests.conftest import RunningApp, free_port, make_settings, start_app, stop_app

BUCKET = "k8si-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_bucket(
        Bucket=BUCKET)
    yield endpoint
    server.stop()


def s3_options(endpoint: str) -> dict[str, str]:
    return {"endpoint": endpoint, "region": "us-east-1", "access_key_id": "test",
            "secret_access_key": "test", "allow_http": "true"}


def test_file_store_round_trip_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    store = FileStore(create_object_store(f"s3://{BUCKET}", tmp_path / "unused",
                                          s3_options(s3_endpoint)))
    data = bytes(range(256)) * 4096  # 1 MiB, more than one stream chunk
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    meta = FileMeta(id="F" * 21, session_id="S" * 21, tenant="default", name="blob.bin",
                    size=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def scenario() -> None:
        await store.ping()
        await store.put(meta, source)
        assert await store.get_meta("default", "S" * 21, "F" * 21) == meta
        assert await store.get_meta("other", "S" * 21, "F" * 21) is None
        assert [m.id for m in await store.list_session("default", "S" * 21)] == ["F" * 21]
        received = b"".join([chunk async for chunk in await store.open(meta, chunk_size=65536)])
        assert received == data
        await store.delete(meta)
        assert await store.list_session("default", "S" * 21) == []
        await store.delete(meta)  # idempotent

    asyncio.run(scenario())
    assert not (tmp_path / "unused").exists(), "an S3 URL never falls back to a directory"


@pytest.fixture(scope="module")
def s3_app(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path, valkey_url: str,
           s3_endpoint: str) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path_factory.mktemp("s3app"), runtime_dir, valkey_url,
                             pool_sizes={}, pool_warmup_on_startup=False,
                             object_store_url=f"s3://{BUCKET}",
                             object_store_options=s3_options(s3_endpoint))
    running, server, thread = start_app(settings)
    yield running
    stop_app(server, thread)


def test_upload_exec_download_through_s3(s3_app: RunningApp) -> None:
    with s3_app.client() as client:
        up = client.post("/upload", files={"file": ("in.txt", b"from s3\n", "text/plain")})
        assert up.status_code == 200, up.text
        body = up.json()
        ref = {"id": body["files"][0]["fileId"], "storage_session_id": body["session_id"],
               "name": "in.txt"}
        result = client.post("/exec", json={"lang": "bash", "files": [ref], "code":
                                            "tr a-z A-Z < /mnt/data/in.txt > /mnt/data/out.txt"})
        [out] = result.json()["files"]
        download = client.get(f"/download/{result.json()['session_id']}/{out['id']}")
        assert download.content == b"FROM S3\n"
        ready = client.get("/health/ready").json()
        assert ready["services"]["object_store"]["status"] == "healthy"
    # the store really is the S3 endpoint
    assert httpx.get(f"{s3_app.base_url}/health").status_code == 200
