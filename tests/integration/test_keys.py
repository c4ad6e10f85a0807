"""Envelope keys on the real stack: the KMS server, the keyring in PostgreSQL, sealed PII, rotation,
crypto-shredding, key access, and the second factor of sensitive commands."""

from __future__ import annotations

import dataclasses
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from paylake.security import keys, operators, totp
from paylake.security.totp import MfaError
from paylake.stores import mongo, postgres
from tests.conftest import run_cli

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def world(settings):
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import drop_isolated_sources, isolated_sources
    from paylake.sources.seed import seed

    isolated = isolated_sources(settings, "paylake_keys")
    spec = dataclasses.replace(SCALES["tiny"], customers=60, days=20, log_sessions=0)
    seed(isolated, spec)
    yield isolated
    drop_isolated_sources(settings, "paylake_keys")


def _kms(settings, who: str):
    import json

    principals = json.loads((_state_dir(settings) / "kms" / "principals.json").read_text())
    akid, entry = next((k, v) for k, v in principals.items() if v["name"] == f"paylake-{who}")
    return boto3.client("kms", endpoint_url=settings.kms_endpoint_url, region_name="us-east-1",
                        verify=settings.tls_ca_file, aws_access_key_id=akid, aws_secret_access_key=entry["secret"])


def _state_dir(settings):
    from pathlib import Path

    return Path(settings.tls_ca_file).parents[1]


def _code(secret: str) -> str:
    return totp.code_at(secret, time.time())


def test_pii_is_sealed_and_every_customer_opens(world):
    revealed = keys.reveal_customers(world, range(1, 61))
    assert len(revealed) == 60
    assert all(v["email"] and "@" in v["email"] and v["full_name"] and v["street"] for v in revealed.values())
    with postgres.connect(world) as conn:
        raw = b"".join(bytes(r[0]) for r in conn.execute("select EmailEncrypted from oltp.Customer"))
    assert not any(v["email"].encode() in raw for v in revealed.values())


def test_review_texts_in_mongo_are_sealed_under_the_customers_key(world):
    from paylake.sources.documents import RATING_MESSAGES

    with mongo.client(world) as client:
        reviews = list(mongo.database(client, world).CustomerReview.find({}, {"customerId": 1, "message": 1}))
    assert reviews and all(isinstance(r["message"], bytes) for r in reviews)
    assert not any(m.encode() in r["message"] for r in reviews for m in RATING_MESSAGES.values())
    with keys.Keyring(world) as ring:
        subject = ring.subject_keys([r["customerId"] for r in reviews])
    clear = keys.open_pii(subject, "mongo.customerreview", "message", [r["customerId"] for r in reviews],
                          [r["message"] for r in reviews])
    assert set(clear) <= set(RATING_MESSAGES.values())


def test_a_tampered_or_moved_ciphertext_fails_with_a_clear_error(world):
    with postgres.connect(world) as conn:
        (first,), (second,) = conn.execute("select EmailEncrypted from oltp.Customer where CustomerID in (1, 2)"
                                           " order by CustomerID").fetchall()
    with keys.Keyring(world) as ring:
        subject = ring.subject_keys([1, 2])
    flipped = bytearray(bytes(first))
    flipped[-1] ^= 0x01
    with pytest.raises(keys.KeyringError, match="does not authenticate"):
        keys.open_pii(subject, "oltp.customer", "EmailEncrypted", [1], [bytes(flipped)])
    with pytest.raises(keys.KeyringError, match="does not authenticate"):  # customer 1's email in customer 2's row
        keys.open_pii(subject, "oltp.customer", "EmailEncrypted", [2], [bytes(first)])
    with pytest.raises(keys.KeyringError, match="unknown format"):
        keys.open_pii(subject, "oltp.customer", "EmailEncrypted", [2], [b"\xc3\x0d" + bytes(second)[2:]])


def test_a_kms_that_is_down_or_a_wrong_key_gives_one_clear_error_and_writes_nothing(world):
    from paylake.sources.generator import SCALES
    from paylake.sources.seed import seed
    from paylake.stack.process import free_port

    down = world.model_copy(update={"kms_endpoint_url": f"https://127.0.0.1:{free_port()}"})
    with postgres.connect(world) as conn:
        before = conn.execute("select count(*) from oltp.Customer").fetchone()
    with pytest.raises(keys.KmsUnavailable, match="does not answer"):
        seed(down, dataclasses.replace(SCALES["tiny"], customers=60, days=20, log_sessions=0), reset=True)
    with postgres.connect(world) as conn:
        assert conn.execute("select count(*) from oltp.Customer").fetchone() == before, "nothing half-written"
    with keys.Keyring(world) as ring, pytest.raises(keys.KeyringError, match="no key for customer"):  # missing
        ring.subject_keys([1, 424242], require=True)
    wrong = world.model_copy(update={"kms_secret_access_key": SecretStr("not-the-secret")})
    with pytest.raises(keys.KeyringError, match="InvalidSignature|signature"):
        keys.reveal_customers(wrong, [1])


def test_key_access_is_separate_from_data_access(world):
    with postgres.connect(world) as conn:
        (wrapped,) = conn.execute("select Wrapped from keyring.DataKey where KeyName = %s and State = 'active'",
                                  (keys.CUSTOMER_KEY,)).fetchone()
        (version,) = conn.execute("select max(Version) from keyring.DataKey where KeyName = %s",
                                  (keys.CUSTOMER_KEY,)).fetchone()
    context = {"paylake:key": keys.CUSTOMER_KEY, "paylake:version": str(version)}
    pipeline, developer, admin = (_kms(world, w) for w in ("pipeline", "developer", "keyadmin"))

    assert len(pipeline.decrypt(CiphertextBlob=bytes(wrapped), EncryptionContext=context)["Plaintext"]) == 32
    for who in (developer, admin):  # a data role, and the administrator who manages keys but never sees one
        with pytest.raises(ClientError, match="AccessDenied"):
            who.decrypt(CiphertextBlob=bytes(wrapped), EncryptionContext=context)
    with pytest.raises(ClientError, match="AccessDenied"):
        developer.generate_data_key(KeyId="alias/paylake/postgres", KeySpec="AES_256")
    # the developers' own key works for them, not for the pipeline
    own = developer.encrypt(KeyId="alias/paylake/sandbox-developer", Plaintext=b"theirs")["CiphertextBlob"]
    assert developer.decrypt(CiphertextBlob=own)["Plaintext"] == b"theirs"
    with pytest.raises(ClientError, match="AccessDenied"):
        pipeline.decrypt(CiphertextBlob=own)
    unsigned = boto3.client("kms", endpoint_url=world.kms_endpoint_url, region_name="us-east-1",
                            verify=world.tls_ca_file, aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="x")
    with pytest.raises(ClientError, match="UnrecognizedClient"):
        unsigned.list_keys()


def test_sensitive_commands_need_a_valid_totp(world, monkeypatch):
    enrolment = operators.enroll(world, "op-keys", replace=True)
    for args, message in ((["pii", "show", "1"], "needs a second factor"),
                          (["pii", "show", "1", "--operator", "op-keys", "--totp", "000000"], "wrong or expired"),
                          (["pii", "show", "1", "--operator", "nobody", "--totp", "123456"], "not an enrolled"),
                          (["keys", "rotate"], "needs a second factor")):
        result = run_cli(world, monkeypatch, *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "@" not in result.output
    code = _code(enrolment.secret)
    result = run_cli(world, monkeypatch, "pii", "show", "1", "--operator", "op-keys", "--totp", code)
    assert result.exit_code == 0 and '"email"' in result.output, result.output
    with pytest.raises(MfaError, match="already used"):
        operators.require(world, "op-keys", code, action="a replay")


def test_rotation_rewraps_and_reencrypts_and_everything_still_opens(world, monkeypatch):
    before = keys.reveal_customers(world, range(1, 61))
    enrolment = operators.enroll(world, "op-rotate", replace=True)
    result = run_cli(world, monkeypatch, "keys", "rotate", "--store", "postgres", "--operator", "op-rotate",
                     "--totp", _code(enrolment.secret))
    assert result.exit_code == 0 and "postgres: master key rotated" in result.output, result.output
    with postgres.connect(world) as conn:
        masters = {r[0] for r in conn.execute("select MasterKeyArn from keyring.DataKey where Store = 'postgres'")}
    admin = _kms(world, "keyadmin")
    assert masters == {admin.describe_key(KeyId="alias/paylake/postgres")["KeyMetadata"]["Arn"]}
    assert keys.reveal_customers(world, range(1, 61)) == before, "re-wrapped, nothing rewritten, all opens"

    # a re-encryption stopped after its first batch resumes where it stopped
    def stop_after_first(message: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keys.reencrypt(world, [keys.CUSTOMER_KEY], actor="test", batch=25, progress=stop_after_first)
    with postgres.connect(world) as conn:
        versions = dict(conn.execute("select TableKeyVersion, count(*) from keyring.SubjectKey group by 1").fetchall())
    assert len(versions) == 2 and sorted(versions.values()) == [25, 35], versions
    done = keys.reencrypt(world, [keys.CUSTOMER_KEY], actor="test", batch=25)
    assert "(resumed)" in done[0]
    with postgres.connect(world) as conn:
        assert conn.execute("select count(distinct TableKeyVersion) from keyring.SubjectKey").fetchone() == (1,)
        assert conn.execute("select count(*) from keyring.DataKey where KeyName = %s and State = 'active'",
                            (keys.CUSTOMER_KEY,)).fetchone() == (1,)
    assert keys.reveal_customers(world, range(1, 61)) == before


def test_keys_survive_a_restart_of_the_kms(world, local_stack):
    before = keys.reveal_customers(world, [3])
    local_stack.down(["kms"])
    with pytest.raises(keys.KmsUnavailable):
        keys.reveal_customers(world, [3])
    local_stack.up(["kms"])
    assert keys.reveal_customers(world, [3]) == before


def test_a_destroyed_customer_key_makes_every_copy_unreadable(world, monkeypatch):
    with postgres.connect(world) as conn:  # a backup taken before: the bytes as bronze and old Delta versions hold
        backup = conn.execute("select CustomerID, EmailEncrypted from oltp.Customer where CustomerID in (7, 8)"
                              " order by 1").fetchall()
    with mongo.client(world) as client:
        reviews = list(mongo.database(client, world).CustomerReview.find({}, {"customerId": 1, "message": 1}))
    victim = next(r["customerId"] for r in reviews if r["customerId"] not in (7, 8))
    enrolment = operators.enroll(world, "op-shred", replace=True)
    result = run_cli(world, monkeypatch, "keys", "destroy-customer", str(victim), "--reason", "erasure test",
                     "--operator", "op-shred", "--totp", _code(enrolment.secret))
    assert result.exit_code == 0 and "key destroyed" in result.output, result.output

    revealed = keys.reveal_customers(world, [victim, 7, 8])
    assert revealed[victim] == {"email": None, "full_name": None, "street": None}
    others = [c for c in (7, 8) if c != victim]
    assert all(revealed[c]["email"] for c in others), "the others still open"
    with keys.Keyring(world) as ring:
        subject = ring.subject_keys([victim, *others])
    assert victim not in subject
    own = [r for r in reviews if r["customerId"] == victim]
    assert keys.open_pii(subject, "mongo.customerreview", "message", [victim] * len(own),
                         [r["message"] for r in own]) == [None] * len(own), "the review texts too"
    backed_up = {cid: blob for cid, blob in backup}
    for cid in others:
        assert keys.open_pii(subject, "oltp.customer", "EmailEncrypted", [cid], [backed_up[cid]])[0]


def test_a_database_of_before_the_kms_is_resealed_by_migrate(settings):
    """Data sealed by pgcrypto's single key and review texts in clear (a stack of before this change): 'db
    migrate' re-seals both under per-customer keys, drops the key and its functions, and a second run does
    nothing."""
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import drop_isolated_sources, isolated_sources, migrate
    from paylake.sources.seed import seed

    legacy = isolated_sources(settings, "paylake_legacy")
    try:
        seed(legacy, dataclasses.replace(SCALES["tiny"], customers=60, days=20, log_sessions=0))
        clear = keys.reveal_customers(legacy, range(1, 61))
        old_key = "the-single-key-of-before"
        with postgres.connect(legacy, autocommit=True) as conn:
            conn.execute(_legacy_functions())
            conn.execute("insert into pii.Keyring (Name, KeyValue) values ('pii', %s)", (old_key,))
            for customer_id, values in clear.items():
                conn.execute("update oltp.Customer set EmailEncrypted = pii.encrypt(%s), FullNameEncrypted ="
                             " pii.encrypt(%s) where CustomerID = %s", (values["email"], values["full_name"],
                                                                        customer_id))
                conn.execute("update oltp.Address set StreetEncrypted = pii.encrypt(%s) where CustomerID = %s",
                             (values["street"], customer_id))
        with mongo.client(legacy) as client:
            reviews = mongo.database(client, legacy).CustomerReview
            reviews.update_many({}, [{"$set": {"message": "a review written in clear"}}],
                                bypass_document_validation=True)
        actions = migrate(legacy)
        assert any("re-sealed 60 customer(s)" in a for a in actions), actions
        assert any("review text(s) stored in clear" in a for a in actions), actions
        assert keys.reveal_customers(legacy, range(1, 61)) == clear
        with postgres.connect(legacy) as conn:
            assert conn.execute("select count(*) from pii.Keyring").fetchone() == (0,)
            assert conn.execute("select count(*) from pg_proc where proname = 'decrypt' and"
                                " pronamespace = 'pii'::regnamespace").fetchone() == (0,)
        with mongo.client(legacy) as client:
            assert mongo.database(client, legacy).CustomerReview.count_documents(
                {"message": {"$type": "string"}}) == 0
        assert [a for a in migrate(legacy) if "sealed" in a or "re-sealed" in a] == []
    finally:
        drop_isolated_sources(settings, "paylake_legacy")


def _legacy_functions() -> str:
    """pgcrypto's functions as migration 0003 created them (0006 and migrate drop them)."""
    import re
    from pathlib import Path

    sql = (Path(__file__).resolve().parents[2] / "sql" / "postgres" / "0003_pii_rbac_audit.sql").read_text()
    found = re.findall(r"create or replace function pii\.(?:encrypt|decrypt|lookup_hash)\(.*?\$\$;", sql, re.S)
    assert len(found) == 3
    return "\n".join(found)
