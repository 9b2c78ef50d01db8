"""Access control on a real S3 API: moto's server with its IAM checks switched on.

A server of its own (a subprocess on a free loopback port), so that the checks never reach the other
remote tests: a user is created with a policy that may only read one bucket, then moto's
``/moto-api/reset-auth`` turns authentication and authorization on. Reading with that user's key
works; writing with it, and anything with a key the store does not know, is refused with the reason
``access-denied``, a message that says what to check, and nothing left at the target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import modelsafe as ms

from .conftest import free_port, wait_for_server

pytestmark = pytest.mark.timeout(180, method="thread")

READ_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": ["arn:aws:s3:::readable", "arn:aws:s3:::readable/*"]}]}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[dict]:
    import boto3
    from sklearn.linear_model import LogisticRegression

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_server(f"{endpoint}/moto-api/", server, "moto's server")
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
                 "aws_secret_access_key": "testing"}
        iam, s3 = boto3.client("iam", **admin), boto3.client("s3", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read-one-bucket", PolicyDocument=json.dumps(READ_ONLY))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        s3.create_bucket(Bucket="readable")
        X = np.random.default_rng(0).normal(size=(40, 3))
        local = tmp_path_factory.mktemp("access") / "m.msafe"
        ms.save(LogisticRegression().fit(X, X[:, 0] > 0), local, sample=X[:5])
        s3.put_object(Bucket="readable", Key="m.msafe", Body=local.read_bytes())
        as_reader = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                 aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        # From here on every request is signed by a known key and allowed by its policy, or refused.
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).close()
        reader = {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
                  "skip_instance_cache": True}
        stranger = {"endpoint_url": endpoint, "key": "AKIANOTKNOWNHERE0000", "secret": "x" * 40,
                    "skip_instance_cache": True}
        yield {"reader": reader, "stranger": stranger, "local": local, "s3": as_reader, "X": X}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_reader_may_load_what_its_policy_allows(guarded):
    bundle = ms.load("s3://readable/m.msafe", storage_options=guarded["reader"])
    assert bundle.verify().ok
    assert ms.inspect("s3://readable/m.msafe", storage_options=guarded["reader"]).flavor == "sklearn"


def test_a_save_the_policy_refuses_is_access_denied_and_leaves_nothing(guarded, tmp_path):
    model = ms.load(guarded["local"]).model
    for target in ("s3://readable/new.msafe", "s3://readable/folder-form"):
        with pytest.raises(ms.SaveError) as err:
            ms.save(model, target, sample=guarded["X"][:5], storage_options=guarded["reader"])
        assert err.value.reason == "access-denied", err.value
        assert "the store denied access" in str(err.value) and "permissions" in str(err.value)
        assert "Nothing was left at the target" in str(err.value)
    listed = guarded["s3"].list_objects_v2(Bucket="readable")  # listed with the reader's key
    assert [o["Key"] for o in listed.get("Contents", [])] == ["m.msafe"]


def test_a_key_the_store_does_not_know_is_access_denied_for_every_read(guarded):
    url = "s3://readable/m.msafe"
    for verb in (ms.inspect, ms.load, ms.verify, ms.check_env, ms.scan):
        with pytest.raises(ms.FormatError) as err:
            verb(url, storage_options=guarded["stranger"])
        assert err.value.reason == "access-denied", (verb.__name__, err.value)
        assert "Check that these credentials may read" in str(err.value), verb.__name__


def test_the_cli_says_access_denied_with_exit_code_2(guarded, tmp_path):
    reader = guarded["stranger"]
    options = [f"--storage-option=endpoint_url={reader['endpoint_url']}", f"--storage-option=key={reader['key']}",
               f"--storage-option=secret={reader['secret']}"]
    out = subprocess.run([sys.executable, "-m", "modelsafe", "inspect", "s3://readable/m.msafe", *options],
                         capture_output=True, text=True, cwd=Path(tmp_path), timeout=120)
    assert out.returncode == 2, out  # unreadable input
    assert "the store denied access" in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr
