"""RS256 in pure Python against openssl: keys ``openssl genrsa`` wrote, signatures ``openssl dgst`` made and
checked, the PKCS#1 v1.5 encoding compared whole."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from entra_support import key, key_file, openssl
from hypothesis import given, settings
from hypothesis import strategies as st

from nmisim.entra.jwt import (
    JWTError,
    PublicKey,
    b64url_encode,
    decode,
    encode,
    generate,
    private_key_from_pem,
    verify_rs256,
)


def test_pkcs1_and_pkcs8_pem_read_the_same_key(tmp_path: Path) -> None:
    pkcs1 = key_file("trad", traditional=True)
    assert "BEGIN RSA PRIVATE KEY" in pkcs1.read_text()
    pkcs8 = tmp_path / "k8.pem"
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(pkcs1), "-out", str(pkcs8))
    assert "BEGIN PRIVATE KEY" in pkcs8.read_text()
    a, b = private_key_from_pem(pkcs1.read_text()), private_key_from_pem(pkcs8.read_text())
    assert a == b
    # n and e as openssl prints them
    text = subprocess.run(
        ["openssl", "rsa", "-in", str(pkcs1), "-noout", "-modulus"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(text.strip().split("=", 1)[1], 16) == a.n
    assert a.e == 65537


def test_signature_is_openssls_and_openssl_verifies_ours(tmp_path: Path) -> None:
    k = key("signer")
    msg = tmp_path / "m"
    msg.write_bytes(b"header.claims")
    sig = tmp_path / "sig"
    openssl("dgst", "-sha256", "-sign", str(key_file("signer")), "-out", str(sig), str(msg))
    assert k.sign_rs256(b"header.claims") == sig.read_bytes()
    assert verify_rs256(k.public(), b"header.claims", sig.read_bytes())
    ours = tmp_path / "ours"
    ours.write_bytes(k.sign_rs256(b"other input"))
    msg.write_bytes(b"other input")
    pub = tmp_path / "pub.pem"
    openssl("rsa", "-in", str(key_file("signer")), "-pubout", "-out", str(pub))
    openssl("dgst", "-sha256", "-verify", str(pub), "-signature", str(ours), str(msg))


def test_round_trip_and_tampering() -> None:
    k = key("signer")
    token = encode({"sub": "x", "n": 1}, k)
    jws = decode(token)
    assert jws.header == {"alg": "RS256", "typ": "JWT", "kid": "signer"}
    assert jws.claims == {"sub": "x", "n": 1}
    assert verify_rs256(k.public(), jws.signing_input, jws.signature)
    assert not verify_rs256(key("other").public(), jws.signing_input, jws.signature)
    h, _c, s = token.split(".")
    other = b64url_encode(b'{"sub":"y","n":1}')
    forged = decode(f"{h}.{other}.{s}")
    assert not verify_rs256(k.public(), forged.signing_input, forged.signature)
    # a signature one byte short, or not below n, is refused before any arithmetic
    assert not verify_rs256(k.public(), jws.signing_input, jws.signature[1:])
    assert not verify_rs256(k.public(), jws.signing_input, b"\xff" * len(jws.signature))


def test_jwk_round_trip_and_thumbprint_kid() -> None:
    k = key("signer")
    jwk = k.public().jwk()
    assert PublicKey.from_jwk(jwk) == k.public()
    unnamed = private_key_from_pem(key_file("signer").read_text())
    assert unnamed.public().kid == unnamed.thumbprint() != ""
    with pytest.raises(JWTError):
        PublicKey.from_jwk({"kty": "EC", "crv": "P-256"})
    with pytest.raises(JWTError):
        PublicKey.from_jwk({"kty": "RSA", "n": "AQAB", "e": "AQAB"})  # far too small


def test_generated_key_signs_and_verifies() -> None:
    k = generate(1024)
    assert k.n.bit_length() == 1024
    jws = decode(encode({"a": 1}, k))
    assert verify_rs256(k.public(), jws.signing_input, jws.signature)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!.e30.",
        "e30.e30",
        "W10.e30.",
        "e30.W10.",
        "bm90IGpzb24.e30.",
        "e30.e30.A",
        "x" * 20000,
    ],
)
def test_malformed_tokens_are_jwt_errors(token: str) -> None:
    with pytest.raises(JWTError):
        decode(token)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_decode_never_raises_anything_but_jwterror(text: str) -> None:
    with contextlib.suppress(JWTError):
        decode(text)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_bad_pem_is_jwterror(pem: str) -> None:
    with pytest.raises(JWTError):
        private_key_from_pem(pem)


def test_crt_and_plain_signatures_are_the_same() -> None:
    k = key("signer")
    assert k.p and k.q and k.p * k.q == k.n
    plain = type(k)(k.n, k.e, k.d, k.kid)
    assert plain.sign_rs256(b"m") == k.sign_rs256(b"m")
