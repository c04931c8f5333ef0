"""Security: no credentials in the repository or the images, no code from the store,
and no id or key that leaves its prefix.

Credentials policy (what the scan enforces):

- Outside ``tests/`` nothing holds a credential. Deployment files name them
  (``${VAR:?set in .env}``, Kubernetes Secrets, Airflow connections), and the values come
  from the environment at run time. ``infra/compose/env.example`` is a list of empty names.
- ``tests/`` may hold placeholder credentials for the local fakes (moto accepts any key),
  but only those listed in :data:`TEST_PLACEHOLDERS`: a new one has to be added there, in
  plain sight.
- Anywhere: no cloud key ids, private keys or service tokens, and no file that holds
  secrets by its nature (``.env``, ``*.pem``, ``id_rsa``...) is tracked or sent to an image.

The literal scan is a heuristic, tuned to stay silent on this repository's references
(``${VAR}``, env var names, psql ``:'var'``, kz_launch's ``"secret": "<k8s Secret name>"``)
and checked against planted leaks of each kind so that it can fail.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest

from kzjobs.core.store import Store, UnsafeKeyError, open_store

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "containers").glob("*.Dockerfile"))
IMAGE_SOURCES = ("pyproject.toml", "README.md", "kzjobs", "dags", "locks")  # all the images copy

# Placeholders the tests give local fakes (moto's S3, a Connection object in a unit test).
TEST_PLACEHOLDERS = {"testing", "minioadmin", "guest", "AK", "SK", "p", "p@ss", "p%40ss"}

# Secrets with a recognisable shape: never anywhere, tests included.
SECRET_SHAPES = {
    "AWS access key id": re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA)[A-Z0-9]{16}"
                                    rb"(?![A-Z0-9])"),
    "AWS secret access key": re.compile(
        rb"(?i)aws.{0,20}secret.{0,20}[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    "private key": re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "GitHub token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(rb"\bAIza[0-9A-Za-z_-]{35}"),
}
# A credential written as a literal: a URI's user:password@, or a value given to a name
# that ends in a secret word (``password``, ``*_SECRET``, ``token``, ``access_key_id``...;
# not ``secretName`` or ``secretKeyRef``, which name a Kubernetes Secret).
URI_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]+:([^\s/@'\"]+)@")
_SECRET_NAME = (r"(?i)(?<![\w{$])\w*(?:password|passwd|secret|token|api_?key"
                r"|access_?key(?:_id)?|credentials?)(?!\w)")
# name = "value", name: 'value', "name": "value", ["NAME"] = "value"
SECRET_ASSIGNMENT = re.compile(_SECRET_NAME + r"[\"']?\]?\s*[:=]\s*[\"']([^\"'\s]+)[\"']")
# YAML, env files, Dockerfiles, shell: NAME=value or name: value, unquoted.
SECRET_SETTING = re.compile(_SECRET_NAME + r"\s*[:=]\s*([^\s\"'#,)\]}]+)")
SECRET_FILE = re.compile(
    r"(?i)(^|/)(\.env(\..+)?|.*\.(pem|key|p12|pfx|jks|keystore)|id_(rsa|dsa|ecdsa|ed25519)"
    r"|\.netrc|\.pgpass|\.htpasswd|credentials(\.json)?|\.aws/.*|\.docker/config\.json)$"
)


def _is_reference(value: str) -> bool:
    """A value that names a credential instead of holding one: ``${VAR}``, ``<VAR>``,
    ``{{ template }}``, an environment variable's name, or elided in docs (``...``)."""
    return (value.startswith(("$", "<", "{{")) or value in ("None", "null", "true", "false")
            or re.fullmatch(r"[A-Z][A-Z0-9_]*|\.+|\*+|x+", value) is not None)


def repo_files() -> list[str]:
    """Files git tracks, plus new ones not ignored: all that a commit would publish."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})


def credential_findings(path: str, data: bytes) -> list[str]:
    """Every credential-looking thing in one file, as ``path:line: what``."""
    found = []

    def where(offset: int) -> str:
        line = data.count(b"\n", 0, offset) + 1
        return f"{path}:{line}"

    for what, pattern in SECRET_SHAPES.items():
        found += [f"{where(m.start())}: {what}" for m in pattern.finditer(data)]
    text = data.decode("utf-8", "replace")
    in_tests = path.startswith("tests/")
    code = path.endswith(".py")  # there an unquoted value is an expression, not a literal
    for n, line in enumerate(text.splitlines(), 1):
        line = re.sub(r":'\w+'", " psql-variable", line)  # psql's :'name' is a reference
        # kz_launch's SecretRef, {"env": ..., "secret": "<Kubernetes Secret>", "key": ...}
        line = re.sub(r"([\"']?)secret\1(\s*:\s*[\"']?[a-z0-9]+(?:-[a-z0-9]+)+)",
                      r"\1secret_ref\1\2", line)
        values = [("password in a URI", v) for v in URI_PASSWORD.findall(line)]
        values += [("credential literal", v) for v in SECRET_ASSIGNMENT.findall(line)]
        if not code:
            values += [("credential setting", v) for v in SECRET_SETTING.findall(line)]
        for what, value in values:
            if _is_reference(value) or (in_tests and value in TEST_PLACEHOLDERS):
                continue
            found.append(f"{path}:{n}: {what} {value[:4]}...")
    return found


# ---- no credentials in the repository ---------------------------------------------------


def test_the_scanner_finds_planted_credentials():
    """The scan below can fail: each kind of leak is caught (built here at run time, so
    this file holds none of them)."""
    # Split so that this file's own text holds none of them.
    pw, key, aws = "pass" + "word", "AKIA" + "Q" * 16, "aws_secret_" + "access_key"
    secret40 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
    planted = {
        "kzjobs/a.py": f'KEY = "{key}"\n',
        "kzjobs/b.py": f'{aws}_x = "{secret40}"\n',  # no placeholder rule: the shape alone
        "infra/c.yaml": "uri: postgresql://kz:" + "hunter2@db:5432/kz\n",
        "kzjobs/d.py": f'client({pw}="hunter2")\n',
        "dags/e.py": 'conn = {"api_' + 'key": "s3cr3tvalue"}\n',
        "tests/f.py": f'boto3.client({aws}="not-a-placeholder")\n',
        "infra/g.env": f"DB_{pw.upper()}=hunter2\n",
        "containers/h.Dockerfile": "ENV AWS_SECRET_" + "ACCESS_KEY=abc123def\n",
        "bench/i.txt": "-----BEGIN " + "OPENSSH PRIVATE KEY-----\n",
        "infra/j.yaml": "secret" + ": hunter2\n",
    }
    for path, text in planted.items():
        assert credential_findings(path, text.encode()), path
    clean = {
        "infra/compose.yaml": "uri: postgresql+psycopg2://kz:${KZ_DB_PASSWORD:?set}@db/kz\n",
        "infra/initdb.sh": "CREATE ROLE kz LOGIN PASSWORD :'kz_pw';\n",
        "tests/conftest.py": 'monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")\n',
        "kzjobs/x.py": 'secret["AWS_SECRET_ACCESS_KEY"] = conn.password\n',
        "infra/values.yaml": '{"env": "AWS_SECRET_ACCESS_KEY", "secret": "kz-s3", "key": "k"}\n',
    }
    for path, text in clean.items():
        assert not credential_findings(path, text.encode()), path


def test_no_credentials_in_tracked_files():
    files = repo_files()
    assert "kzjobs/core/store.py" in files and "infra/compose/compose.yaml" in files
    findings = [f for path in files for f in credential_findings(path, (REPO / path).read_bytes())]
    assert not findings, "\n".join(findings)


def test_no_secret_files_tracked_or_copied_into_an_image():
    tracked = [f for f in repo_files() if SECRET_FILE.search(f)]
    assert not tracked, tracked
    # The images copy folders from the working tree, where ignored files live too.
    on_disk = [
        str(p.relative_to(REPO))
        for src in IMAGE_SOURCES if (REPO / src).is_dir()
        for p in (REPO / src).rglob("*") if p.is_file() and SECRET_FILE.search(p.name)
    ]
    assert not on_disk, on_disk
    assert SECRET_FILE.search("infra/compose/.env") and SECRET_FILE.search("x/id_rsa")


def test_deployment_env_example_has_no_values():
    for line in (REPO / "infra/compose/env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if line and not line.startswith("#") and re.search(r"PASSWORD|SECRET|FERNET", name):
            assert value == "", line


def test_credentials_come_from_the_environment_not_the_code():
    """No boto3 client, MLflow client or DB engine in kzjobs/ is handed a literal secret."""
    bad = []
    for path in sorted((REPO / "kzjobs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if (kw.arg and re.search(r"(?i)secret|password|access_key|token", kw.arg)
                            and isinstance(kw.value, ast.Constant) and kw.value.value):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {kw.arg}=")
    assert not bad, bad


# ---- no credentials in the images ------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def _env_names(args: str) -> list[str]:
    """Names set by one ENV/ARG instruction (``A=1 B=2``, ``A 1`` or a bare ``ARG A``)."""
    if "=" not in args.split()[0]:
        return [args.split()[0]]
    return re.findall(r"(?:^|\s)(\w+)=", args)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_no_secrets_and_set_no_credentials(dockerfile: Path):
    ins = _instructions(dockerfile)
    assert ins, dockerfile
    for kind, args in ins:
        if kind in ("COPY", "ADD"):
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            assert kind == "COPY", f"ADD can fetch URLs and unpack archives: {args}"
            assert all(s.split("/")[0] in IMAGE_SOURCES for s in sources), args
        if kind in ("ENV", "ARG"):
            for name in _env_names(args):
                # A URI or connection string can carry a password, so none is baked in.
                assert not re.search(
                    r"(?i)secret|password|passwd|token|access_key|credential|private|fernet"
                    r"|api_key|^aws_|_uri$|_conn$|tracking_username", name), (kind, name)
    # The build context is default-deny: a .env or key beside the sources is never sent.
    ignore = [ln.strip() for ln in Path(f"{dockerfile}.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*"
    assert {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")} <= set(IMAGE_SOURCES)


# ---- weights load as weights, nothing unpickles store data -------------------------------

# Calls that run code from the bytes they read: never in kzjobs/.
UNSAFE_LOADERS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "cPickle.load", "joblib.load", "dill.load", "dill.loads", "cloudpickle.load",
    "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open", "torch.jit.load",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "numpy.load", "pandas.read_pickle",
}
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "joblib", "dill", "cloudpickle", "shelve",
                  "marshal"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """``torch.load`` for ``torch.load``/``th.load``/``from torch import load``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def loader_findings(source: str, name: str = "<src>") -> tuple[list[str], int]:
    """(problems, number of safe ``torch.load`` calls) in one module's source."""
    tree = ast.parse(source, name)
    aliases = {"np": "numpy", "pd": "pandas"}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
                if a.name.split(".")[0] in UNSAFE_MODULES:
                    problems.append(f"{name}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in UNSAFE_MODULES:
                problems.append(f"{name}:{node.lineno}: from {node.module} import")
    safe_loads = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = _dotted(node.func, aliases)
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        if called == "torch.load":
            flag = kwargs.get("weights_only")
            if isinstance(flag, ast.Constant) and flag.value is True:
                safe_loads += 1
            else:
                problems.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
        elif called == "numpy.load":
            flag = kwargs.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(f"{name}:{node.lineno}: numpy.load(allow_pickle=...)")
        elif called in UNSAFE_LOADERS or called.endswith(".read_pickle"):
            problems.append(f"{name}:{node.lineno}: {called}")
    return problems, safe_loads


def test_the_loader_scan_finds_unsafe_loads():
    for src in [
        "import torch\ntorch.load(f)\n",
        "import torch\ntorch.load(f, weights_only=False)\n",
        "import torch as th\nth.load(f, weights_only=flag)\n",
        "from torch import load\nload(f)\n",
        "import pickle\n",
        "from joblib import load\n",
        "import pandas as pd\npd.read_pickle(k)\n",
        "import numpy as np\nnp.load(f, allow_pickle=True)\n",
        "import yaml\nyaml.load(text)\n",
        "df.read_pickle(k)\n",
    ]:
        assert loader_findings(src)[0], src
    assert loader_findings("import torch\ntorch.load(f, map_location='cpu', weights_only=True)\n"
                           ) == ([], 1)


def test_every_torch_load_in_kzjobs_is_weights_only_and_nothing_unpickles():
    problems, safe = [], 0
    for path in sorted([*(REPO / "kzjobs").rglob("*.py"), *(REPO / "dags").rglob("*.py")]):
        found, n = loader_findings(path.read_text(), str(path.relative_to(REPO)))
        problems += found
        safe += n
    assert not problems, "\n".join(problems)
    assert safe >= 2  # checkpoint.py and detect/model.py: the scan did see them


class _Payload:
    """Pickles as a call to ``os.mkdir(marker)``: loading it runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_poisoned_checkpoint_in_the_store_does_not_run(tmp_path):
    import torch

    from kzjobs.core.checkpoint import load_from_store
    from kzjobs.detect.model import read_weights

    store = open_store(tmp_path / "store")
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, buf)
    store.write_bytes("runs/x/model.pt", buf.getvalue())

    with pytest.raises(pickle.UnpicklingError):
        load_from_store(store, "runs/x/model.pt")
    with pytest.raises(pickle.UnpicklingError):
        read_weights(store.local_path("runs/x/model.pt"))
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert marker.is_dir()


# ---- ids and keys cannot escape their prefix -------------------------------------------

UNSAFE_KEYS = ["../x", "../../x", "a/../../x", "..", ".", "/etc/passwd", "a//b", "a\\b",
               "..\\x", "a\x00b", "~/x", "%2e%2e/x", "a b", "C:x", "a/./b", "",
               "a/\u2025/x", "a\u2215b"]  # '‥' and '∕' look like '..' and '/' and are no letters


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_a_child_store_refuses_keys_that_leave_it(store: Store, key: str):
    store.write_bytes("a/inside.txt", b"in")
    store.write_bytes("ab/sibling.txt", b"sibling")  # shares the child's name as a prefix
    child = store.child("a")
    for op in (lambda: child.read_bytes(key), lambda: child.write_bytes(key, b"x"),
               lambda: child.exists(key), lambda: child.delete(key),
               lambda: child.child(key), lambda: child.child("b").write_bytes(key, b"x")):
        with pytest.raises(UnsafeKeyError):
            op()
    # A listing prefix is trimmed of its slashes ("/etc" is the child's "etc"): it either
    # fails or lists inside the child, where nothing but inside.txt exists.
    try:
        listed = child.list(key)
    except UnsafeKeyError:
        listed = []
    assert listed in ([], ["inside.txt"]) and (listed == [] or key.strip("/") == "")
    assert store.list() == ["a/inside.txt", "ab/sibling.txt"]  # nothing written anywhere
    assert store.read_bytes("ab/sibling.txt") == b"sibling"  # nothing deleted


def test_a_child_store_sees_only_its_prefix(store: Store):
    store.write_bytes("a/inside.txt", b"in")
    store.write_bytes("ab/sibling.txt", b"sibling")
    store.write_bytes("a.txt", b"file beside")
    child = store.child("a")
    assert child.list() == ["inside.txt"] and child.list("") == ["inside.txt"]
    grandchild = child.child("b/c")
    grandchild.write_bytes("k.json", b"{}")
    assert store.read_bytes("a/b/c/k.json") == b"{}"
    assert grandchild.uri.endswith("/a/b/c") and grandchild.list() == ["k.json"]
    for prefix in ("../ab", "/a", "a/../ab", "b/../../ab"):
        with pytest.raises(UnsafeKeyError):
            store.child(prefix)
    with pytest.raises(UnsafeKeyError):
        open_store(f"{store.uri}/x").child("..")


def test_an_s3_prefix_cannot_be_left(s3_env: str):
    import boto3

    bucket = s3_env.removeprefix("s3://")
    boto3.client("s3").put_object(Bucket=bucket, Key="other/secret.txt", Body=b"s")
    boto3.client("s3").put_object(Bucket=bucket, Key="tenant-b/x.txt", Body=b"b")
    tenant = open_store(f"{s3_env}/tenant")
    for key in ("../other/secret.txt", "/other/secret.txt", "..", "../tenant-b/x.txt"):
        with pytest.raises(UnsafeKeyError):
            tenant.read_bytes(key)
    assert tenant.list() == []  # tenant-b shares the name as a prefix, not the folder
    with pytest.raises(UnsafeKeyError):
        open_store(f"{s3_env}/a/../other")


@pytest.fixture(scope="module")
def bundle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.workload import write_seeded_bundle

    root = tmp_path_factory.mktemp("security") / "store"
    write_seeded_bundle(open_store(root), "model")
    return root


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


UNSAFE_IDS = ["../escape", "../../../../tmp/escape", "a/b", "/abs/page", "x\x00y", "..", "a\\b",
              "-dash/../x", "x" * 300]


def test_unsafe_ids_from_a_csv_are_quarantined_never_looked_up(bundle_store: Path):
    """The competition's folder: its pages are the ids of ``sample_submission.csv``, in
    its order. An unsafe id there is quarantined by name and never joined into a path or
    a key; no output is written for it, and nothing lands outside the output prefix. The
    submission still lists every id of the sample, in its order (Kaggle wants them all)."""
    from kzjobs.data.format import LABEL_COLUMNS, read_submission, write_rows
    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.synth import generate

    store = open_store(bundle_store)
    coll = store.child("csv-ids")
    generate(coll.child("gen"), books=1, pages_per_book=1, seed=7, fonts=["ipaex-mincho"],
             labelled=False)
    good = []
    for key in coll.list("gen/images"):
        good.append(key.rsplit("/", 1)[-1][: -len(".jpg")])
        coll.write_bytes(f"test_images/{good[-1]}.jpg", coll.read_bytes(key))
    order = [UNSAFE_IDS[0], *good, *UNSAFE_IDS[1:]]
    coll.write_bytes("sample_submission.csv",
                     write_rows(LABEL_COLUMNS, [(i, "U+3042 1 1") for i in order]))
    # The labelled training pages are no pages of this run.
    coll.write_bytes("train_images/trained_1.jpg", coll.read_bytes(key))
    coll.write_bytes("train.csv", write_rows(LABEL_COLUMNS, [("trained_1", "")]))
    before = _files(bundle_store.parent)

    summary = RecognizeJob(store_uri=str(bundle_store), profile_name="tiny", model="model",
                           collection="csv-ids", out="out/csv-ids", progress=False).run()

    assert summary["recognized"] == len(good)
    report = store.read_json("out/csv-ids/report.json")
    assert report["pages_in"] == report["recognized"] + report["quarantined"] == len(order)
    reasons = {q["item"]: q["reason"] for q in report["quarantine"]}
    assert set(reasons) == set(UNSAFE_IDS)
    assert all(r.startswith("unsafe image id in sample_submission.csv") for r in reasons.values())
    new = _files(bundle_store.parent) - before
    prefix = f"{bundle_store.name}/out/csv-ids/"
    assert all(f.startswith(prefix) for f in new), sorted(f for f in new if
                                                          not f.startswith(prefix))
    pages = sorted(k[len("pages/"):-len(".json")] for k in store.child("out/csv-ids").list("pages"))
    assert pages == good
    submission = read_submission(store.read_bytes("out/csv-ids/submission.csv"))
    assert list(submission) == order and not submission[UNSAFE_IDS[0]]

    # A re-run finds every page done and quarantines the same ids again (by content).
    again = RecognizeJob(store_uri=str(bundle_store), profile_name="tiny", model="model",
                         collection="csv-ids", out="out/csv-ids", progress=False).run()
    assert again["already_done"] == len(good) and again["recognized"] == 0
    assert again["merge"]["quarantined"] == len(UNSAFE_IDS)


def test_a_scan_folder_with_real_file_names_reads_them_and_refuses_path_tricks(
        bundle_store: Path, tmp_path: Path):
    """``kzjobs recognize --images DIR``: names as people and scanners make them (spaces,
    Japanese, accents, decomposed kana as macOS writes them) become safe ids and keep
    their name in the page's source; a name with a path character or a leading '-' is
    quarantined, and so is a symbolic link out of the folder, which is never opened (a
    link to a FIFO: opening it would block the job for ever)."""
    import unicodedata

    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.validate.corpus import page_jpeg

    scans = tmp_path / "scans"
    scans.mkdir()
    decomposed = unicodedata.normalize("NFD", "がっこう 1.jpg")
    names = {"p1.jpg": "p1", "Scan 001.jpg": "Scan_001", "源氏物語_001.jpg": "源氏物語_001",
             "ü.jpg": "ü", decomposed: "がっこう_1"}
    for name in [*names, "x:y.jpg", "-rf.jpg"]:
        (scans / name).write_bytes(page_jpeg())
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    (scans / "link_001.jpg").symlink_to("/etc/passwd")
    (scans / "link_002.jpg").symlink_to(fifo)
    (scans / "inside.jpg").symlink_to(scans / "p1.jpg")  # a link within the folder is read
    names["inside.jpg"] = "inside"
    out = tmp_path / "out"
    summary = RecognizeJob(store_uri=str(bundle_store), profile_name="tiny", model="model",
                           images=str(scans), out=str(out), progress=False).run()
    assert summary["recognized"] == len(names)
    report = open_store(out).read_json("report.json")
    assert report["pages_in"] == len(names) + 4
    reasons = {q["item"]: q["reason"] for q in report["quarantine"]}
    assert set(reasons) == {"x:y.jpg", "-rf.jpg", "link_001.jpg", "link_002.jpg"}
    assert "path or control characters" in reasons["x:y.jpg"]
    assert "start with a letter or digit" in reasons["-rf.jpg"]
    assert reasons["link_001.jpg"].startswith("symbolic link to outside the collection")
    assert "/etc/passwd" in reasons["link_001.jpg"] and str(fifo) in reasons["link_002.jpg"]
    assert sorted(p.name for p in (out / "pages").iterdir()) == sorted(
        f"{i}.json" for i in names.values())
    for name, ident in names.items():
        page = json.loads((out / "pages" / f"{ident}.json").read_text())
        assert page["source"] == {"name": name}
