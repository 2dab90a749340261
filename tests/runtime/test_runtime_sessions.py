"""Runtime sessions over real HTTP (the ``stateful`` profile with a hint): one kept
sandbox per (tenant, hint), ``/mnt/data`` persisting in place, ``/tmp`` wiped, a killed
sandbox restored from its checkpoint, outputs only what changed, tenant isolation of
hints, the hint's shape, and a workspace left half-written never checkpointed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import obstore
import pytest

from app.errors import ServiceUnavailable
from app.storage import FileMeta, FileStore, StorageUnavailable, create_object_store
from tests.conftest import OTHER_KEY, RunningApp, stop_app
from tests.stream.helpers import stream_exec

from .conftest import EXPECTED, drop, kept_of, run, stateful_app, upload

WRITE = ("import os\nopen('/mnt/data/a.csv', 'w').write('x,y\\n1,2\\n')\n"
         "open('/tmp/scratch.txt', 'w').write('s')\nanswer = 42\nprint('written')")
READ = ("import os\nprint(open('/mnt/data/a.csv').read().splitlines()[1])\n"
        "print(os.path.exists('/tmp/scratch.txt'))\nprint(answer)")


def test_created_then_reused_then_restored(stateful_api: RunningApp) -> None:
    first = run(stateful_api, "conv-basic", WRITE)
    assert (first["status"], first["runtime_status"]) == ("ok", "created"), first
    runtime_id = first["runtime_session_id"]
    assert len(runtime_id) == 21 and [f["name"] for f in first["files"]] == ["a.csv"]
    assert len(kept_of(stateful_api, runtime_id)) == 1

    second = run(stateful_api, "conv-basic", READ)  # no file injected
    assert second["runtime_status"] == "reused", second
    assert second["runtime_session_id"] == runtime_id
    assert second["session_id"] == first["session_id"]
    # the workspace in place, /tmp wiped, Python variables kept (state blobs)
    assert second["stdout"].splitlines() == ["1,2", "False", "42"]
    assert second["files"] == []  # nothing changed: no output again

    drop(stateful_api, runtime_id)  # killed, as a reaper or an OOM would
    third = run(stateful_api, "conv-basic", READ + "\nopen('/mnt/data/b.txt','w').write('b')")
    assert third["runtime_status"] == "restored", third
    assert third["runtime_session_id"] == runtime_id
    assert third["stdout"].splitlines() == ["1,2", "False", "42"]
    assert [f["name"] for f in third["files"]] == ["b.txt"]  # a.csv was restored, unchanged


def test_outputs_are_what_changed_and_deletions_are_reported(stateful_api: RunningApp) -> None:
    first = run(stateful_api, "conv-diff", "for n in 'abc': open(f'/mnt/data/{n}.txt','w')"
                                           ".write(n)")
    assert sorted(f["name"] for f in first["files"]) == ["a.txt", "b.txt", "c.txt"]
    second = run(stateful_api, "conv-diff", "import os\nopen('/mnt/data/b.txt','w').write('B')\n"
                                            "os.remove('/mnt/data/c.txt')")
    assert second["runtime_status"] == "reused"
    changed = second["files"]
    assert [f["name"] for f in changed] == ["b.txt"]
    assert second["deleted_files"] == ["c.txt"]
    # the new b.txt can be downloaded at once
    with stateful_api.client() as http:
        got = http.get(f"/download/{changed[0]['storage_session_id']}/{changed[0]['id']}")
    assert got.content == b"B"


def test_an_injected_input_is_placed_once_and_a_read_only_one_kept_original(
        stateful_api: RunningApp) -> None:
    data = upload(stateful_api, "data.csv", b"1,2,3\n")
    frozen = upload(stateful_api, "frozen.txt", b"original", read_only=True)
    first = run(stateful_api, "conv-inputs", "print(open('/mnt/data/data.csv').read().strip())\n"
                "open('/mnt/data/frozen.txt','w').write('edited')",
                files=[data, frozen])
    assert first["stdout"] == "1,2,3\n" and first["runtime_status"] == "created"
    assert [f["name"] for f in first["files"]] == ["frozen.txt"]
    assert first["files"][0]["inherited"] is True  # the edit was dropped
    # re-injected as LibreChat does every turn: not an output, the original restored
    second = run(stateful_api, "conv-inputs", "print(open('/mnt/data/frozen.txt').read())",
                 files=[data, frozen])
    assert second["runtime_status"] == "reused"
    assert second["stdout"] == "original\n" and second["files"] == []


def test_an_input_whose_bytes_are_gone_is_not_placed(stateful_api: RunningApp) -> None:
    """A referenced file whose metadata outlived its bytes is a deleted file to a
    runtime session too: not placed, named in ``deleted_files``, never recorded as
    primed; the run and the next one go on."""
    kept, lost = upload(stateful_api, "kept.csv", b"k"), upload(stateful_api, "lost.csv", b"l")
    base = stateful_api.settings.data_dir / "objects" / "default" / lost["storage_session_id"]
    (base / lost["id"]).unlink()
    meta = json.loads((base / f"{lost['id']}.json").read_bytes())
    meta["last_modified"] -= 3600  # stored long ago: missing bytes are a loss
    (base / f"{lost['id']}.json").write_text(json.dumps(meta))
    first = run(stateful_api, "conv-lost-bytes", "import os\nprint(sorted(os.listdir('.')))",
                files=[kept, lost])
    assert first["stdout"] == "['kept.csv']\n" and first["deleted_files"] == ["lost.csv"]
    assert not (base / f"{lost['id']}.json").exists()
    second = run(stateful_api, "conv-lost-bytes", "import os\nprint(sorted(os.listdir('.')))",
                 files=[kept])
    assert second["runtime_status"] == "reused" and second["stdout"] == "['kept.csv']\n"


def test_a_read_only_input_placed_before_and_gone_since_is_removed(
        stateful_api: RunningApp) -> None:
    """A read-only input the workspace already holds, whose bytes are then lost: the
    next run finds it gone, removes the copy, names it deleted, and the checkpoint
    forgets it (a restore does not look for it again)."""
    skill = upload(stateful_api, "skill.md", b"how to", read_only=True)
    listing = "import os\nprint(sorted(os.listdir('.')))"
    first = run(stateful_api, "conv-lost-ro", listing, files=[skill])
    assert first["stdout"] == "['skill.md']\n"
    base = stateful_api.settings.data_dir / "objects" / "default" / skill["storage_session_id"]
    (base / skill["id"]).unlink()
    meta = json.loads((base / f"{skill['id']}.json").read_bytes())
    meta["last_modified"] -= 3600
    (base / f"{skill['id']}.json").write_text(json.dumps(meta))
    second = run(stateful_api, "conv-lost-ro", listing, files=[skill])
    assert second["runtime_status"] == "reused"
    assert second["stdout"] == "[]\n" and second["deleted_files"] == ["skill.md"]
    assert second["files"] == []
    drop(stateful_api, second["runtime_session_id"])
    third = run(stateful_api, "conv-lost-ro", listing)
    assert third["runtime_status"] == "restored" and third["stdout"] == "[]\n"


def test_checkpoints_store_no_bytes_twice(stateful_api: RunningApp) -> None:
    """Inputs and stored outputs are referenced by the manifest, not copied as blobs;
    a file the output caps left out (over ``MAX_OUTPUT_FILE_SIZE``) is a blob."""
    data = upload(stateful_api, "in.csv", b"a,b\n")
    first = run(stateful_api, "conv-blobs", "open('/mnt/data/out.txt','w').write('o')\n"
                "open('/mnt/data/big.bin','wb').write(b'x' * (2 * 1024 * 1024))",
                files=[data])
    assert [f["name"] for f in first["files"]] == ["out.txt"]
    assert [s["name"] for s in first["skipped_files"]] == ["big.bin"]
    root = stateful_api.settings.data_dir / "objects" / "default" / "rt" / \
        first["runtime_session_id"]
    blobs = list((root / "blobs").iterdir())
    assert len(blobs) == 1 and blobs[0].stat().st_size == 2 * 1024 * 1024
    assert [p.name for p in (root / "manifests").iterdir()] == ["1"]
    # the FILE_TTL sweep walks the store: checkpoints are no files' metadata to it
    assert stateful_api.run(stateful_api.app.state.file_service.objects.expire(1e9)) == []
    drop(stateful_api, first["runtime_session_id"])
    again = run(stateful_api, "conv-blobs", "import os\nprint(sorted(os.listdir('/mnt/data')),"
                                           " os.path.getsize('/mnt/data/big.bin'))")
    assert again["runtime_status"] == "restored"
    assert again["stdout"] == "['big.bin', 'in.csv', 'out.txt'] 2097152\n"


def test_the_same_hint_in_two_tenants_is_two_runtime_sessions(stateful_api: RunningApp) -> None:
    mine = run(stateful_api, "conv-shared-hint", WRITE)
    theirs = run(stateful_api, "conv-shared-hint", "import os\nprint(os.listdir('/mnt/data'))",
                 key=OTHER_KEY)
    assert theirs["runtime_status"] == "created" and theirs["stdout"] == "[]\n"
    assert theirs["runtime_session_id"] != mine["runtime_session_id"]
    assert theirs["session_id"] != mine["session_id"]
    assert len(kept_of(stateful_api, mine["runtime_session_id"])) == 1
    assert len(kept_of(stateful_api, theirs["runtime_session_id"])) == 1
    again = run(stateful_api, "conv-shared-hint", READ)
    assert again["runtime_status"] == "reused"
    assert again["stdout"].splitlines()[0] == "1,2"


@pytest.mark.parametrize("hint", ["", "a b", "x" * 129, "a/b", "é", "a\nb"])
def test_a_malformed_hint_is_a_400(stateful_api: RunningApp, hint: str) -> None:
    answer = run(stateful_api, hint, "print(1)", expect=400)
    assert answer["error"] == "invalid_runtime_session_hint"


def test_the_longest_hint_is_fine_and_no_hint_is_a_default_execution(
        stateful_api: RunningApp) -> None:
    longest = run(stateful_api, "A-z0.9_:" * 16, "print(1)")
    assert longest["runtime_status"] == "created"
    plain = run(stateful_api, None, "print(1)")
    assert plain["stdout"] == "1\n" and plain["runtime_session_id"] is None
    # the default profile ignores a hint
    with stateful_api.client() as http:
        answer = http.post("/exec", json={"lang": "py", "code": "print(2)",
                                          "runtime_session_hint": "conv-basic"}).json()
    assert answer["runtime_session_id"] is None and answer["stdout"] == "2\n"


def test_another_language_moves_the_workspace(stateful_api: RunningApp) -> None:
    first = run(stateful_api, "conv-langs", "open('/mnt/data/n.txt','w').write('7')")
    second = run(stateful_api, "conv-langs", "cat /mnt/data/n.txt", lang="bash")
    assert second["runtime_status"] == "restored" and second["stdout"] == "7"
    assert second["runtime_session_id"] == first["runtime_session_id"]
    third = run(stateful_api, "conv-langs", "echo 8 > /mnt/data/m.txt; cat n.txt", lang="bash")
    assert third["runtime_status"] == "reused" and third["stdout"] == "7"


# -- a workspace left half-written is never checkpointed ------------------------------


class FailingReads(FileStore):
    """The app's store, except that reading a file named in ``failing`` fails half-way."""

    def __init__(self, root: Path) -> None:
        super().__init__(create_object_store(None, root))
        self.failing: set[str] = set()

    async def open(self, meta: FileMeta, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        chunks = await super().open(meta, chunk_size)
        return self._failing(chunks) if meta.name in self.failing else chunks

    @staticmethod
    async def _failing(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for _ in chunks:
            raise StorageUnavailable("object store read failed: injected fault", retry_after=2)
        yield b""  # never reached: every stored file here has bytes


@pytest.fixture(scope="module")
def failing_reads(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path,
                  valkey_url: str) -> Iterator[tuple[RunningApp, FailingReads]]:
    running, server, thread = stateful_app(tmp_path_factory, runtime_dir, valkey_url)
    store = FailingReads(running.settings.data_dir / "objects")
    running.app.state.file_service.objects = store
    yield running, store
    stop_app(server, thread)


def test_a_half_written_workspace_is_never_checkpointed(
        failing_reads: tuple[RunningApp, FailingReads]) -> None:
    app, store = failing_reads
    first = run(app, "conv-half", "open('/mnt/data/good.txt','w').write('g')")
    runtime_id = first["runtime_session_id"]
    good = upload(app, "fine.txt", b"fine")
    broken = upload(app, "broken.txt", b"never arrives")
    store.failing.add("broken.txt")
    failed = run(app, "conv-half", "print('never runs')", files=[good, broken], expect=503)
    assert failed["error"] == "storage_unavailable"
    assert kept_of(app, runtime_id) == []  # the half-written sandbox was dropped
    root = app.settings.data_dir / "objects" / "default" / "rt" / runtime_id / "manifests"
    assert [p.name for p in root.iterdir()] == ["1"]  # no checkpoint of it
    store.failing.clear()
    after = run(app, "conv-half", "import os\nprint(sorted(os.listdir('/mnt/data')))")
    assert after["runtime_status"] == "restored"
    assert after["stdout"] == "['good.txt']\n"  # the last good checkpoint, nothing else


def test_a_lost_checkpoint_is_a_reset(failing_reads: tuple[RunningApp, FailingReads]) -> None:
    app, _ = failing_reads
    first = run(app, "conv-lost", "open('/mnt/data/x.txt','w').write('x')")
    runtime_id = first["runtime_session_id"]
    drop(app, runtime_id)
    store = create_object_store(None, app.settings.data_dir / "objects")
    obstore.delete(store, f"default/rt/{runtime_id}/manifests/1")
    after = run(app, "conv-lost", "import os\nprint(os.listdir('/mnt/data'))")
    assert after["runtime_status"] == "reset" and after["stdout"] == "[]\n"
    assert after["runtime_session_id"] == runtime_id


def test_the_stream_runs_in_the_runtime_session_too(stateful_api: RunningApp) -> None:
    first = run(stateful_api, "conv-stream", "open('/mnt/data/s.txt','w').write('streamed')")
    with stateful_api.client() as http:
        streamed = stream_exec(http, {"lang": "py", "runtime_session_hint": "conv-stream",
                                      "code": "print(open('/mnt/data/s.txt').read())"},
                               headers={EXPECTED: "stateful"})
    result = next(event.data for event in streamed.events if event.name == "result")
    assert result["stdout"] == "streamed\n" and result["runtime_status"] == "reused"
    assert result["runtime_session_id"] == first["runtime_session_id"]


def test_an_input_changed_in_place_is_not_placed_over_again(stateful_api: RunningApp) -> None:
    """LibreChat sends a conversation's files with every call: the code's changes to one
    stay, and it is no output again unless changed again."""
    data = upload(stateful_api, "log.csv", b"a\n")
    first = run(stateful_api, "conv-inplace", "open('/mnt/data/log.csv','a').write('b\\n')",
                files=[data])
    [changed] = first["files"]
    assert changed["name"] == "log.csv" and changed["modified_from"]["id"] == data["id"]
    second = run(stateful_api, "conv-inplace", "print(open('/mnt/data/log.csv').read())",
                 files=[data])
    assert second["runtime_status"] == "reused"
    assert second["stdout"] == "a\nb\n\n" and second["files"] == []
    drop(stateful_api, first["runtime_session_id"])
    third = run(stateful_api, "conv-inplace", "open('/mnt/data/log.csv','a').write('c\\n')\n"
                "print(open('/mnt/data/log.csv').read())", files=[data])
    assert third["runtime_status"] == "restored"
    assert third["stdout"] == "a\nb\nc\n\n"
    assert [f["name"] for f in third["files"]] == ["log.csv"]


def test_old_checkpoints_and_unreferenced_blobs_are_pruned(stateful_api: RunningApp) -> None:
    big = "open('/mnt/data/big.bin','wb').write(b'{c}' * (2 * 1024 * 1024))"
    first = run(stateful_api, "conv-prune", big.format(c="x"))
    root = stateful_api.settings.data_dir / "objects" / "default" / "rt" / \
        first["runtime_session_id"]
    run(stateful_api, "conv-prune", big.format(c="y"))  # a second blob; both referenced
    assert len(list((root / "blobs").iterdir())) == 2
    run(stateful_api, "conv-prune", "import os\nos.remove('/mnt/data/big.bin')")
    assert len(list((root / "blobs").iterdir())) == 1  # the x one: in no kept manifest
    run(stateful_api, "conv-prune", "print(1)")
    assert list((root / "blobs").iterdir()) == []
    assert sorted(p.name for p in (root / "manifests").iterdir()) == ["3", "4"]


def test_a_sandbox_lost_while_being_kept_loses_nothing(
        failing_reads: tuple[RunningApp, FailingReads]) -> None:
    """The backend failing to keep the sandbox after the run (an apiserver error, the pod
    gone): the answer is the code's, and its checkpoint stands for the next call."""
    app, _ = failing_reads
    backend = app.app.state.backend

    async def failing_keep(*args: object, **kwargs: object) -> str:
        raise ServiceUnavailable("injected: the sandbox could not be kept")

    backend.keep = failing_keep  # the seam, for this one call
    try:
        first = run(app, "conv-keep-fails", "open('/mnt/data/k.txt','w').write('kept')\n"
                                            "print('ran')")
    finally:
        del backend.keep
    assert (first["status"], first["stdout"]) == ("ok", "ran\n")
    assert kept_of(app, first["runtime_session_id"]) == []
    after = run(app, "conv-keep-fails", "print(open('/mnt/data/k.txt').read())")
    assert (after["runtime_status"], after["stdout"]) == ("restored", "kept\n")
