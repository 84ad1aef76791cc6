"""Compact JWS (RFC 7515) with RS256 (RFC 7518 §3.3), in pure Python: decode, verify against a JWKS RSA
key, sign with an RSA private key; RSA keys from PEM (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE
KEY``, as ``openssl genrsa`` writes them) through a minimal DER reader, or generated here.

RSASSA-PKCS1-v1_5 (RFC 8017 §8.2): ``s^e mod n`` must equal ``0x00 0x01 FF..FF 0x00 || DigestInfo(SHA-256)
|| H(m)``, compared whole (no parsing of the padding, so no Bleichenbacher-style leniency).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: DER of DigestInfo's AlgorithmIdentifier for SHA-256 (RFC 8017 §9.2 note 1)
SHA256_DIGEST_INFO: Final = bytes.fromhex("3031300d060960864801650304020105000420")
#: compact JWS size this module reads at most (a Kubernetes token is ~1 KiB)
MAX_TOKEN_BYTES: Final = 16 << 10
_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]*$")


class JWTError(ValueError):
    """The token is not a compact JWS this module can read."""


def b64url_decode(text: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise JWTError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JWTError("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_to_b64url(n: int) -> str:
    return b64url_encode(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def b64url_to_int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


@dataclass(frozen=True, slots=True)
class Token:
    """A decoded compact JWS: header and claims (JSON objects), the signed input and the signature."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def decode(token: str) -> Token:
    """Split and decode ``token`` (no verification). Raises :class:`JWTError`."""
    if len(token) > MAX_TOKEN_BYTES:
        raise JWTError("too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("not three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise JWTError("header or claims are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError("header or claims are not JSON objects")
    return Token(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2]))


@dataclass(frozen=True, slots=True)
class PublicKey:
    n: int
    e: int
    kid: str = ""

    @property
    def size(self) -> int:
        return (self.n.bit_length() + 7) // 8

    def jwk(self) -> dict[str, str]:
        out = {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "n": int_to_b64url(self.n),
            "e": int_to_b64url(self.e),
        }
        if self.kid:
            out["kid"] = self.kid
        return out

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """An RSA JWK (``kty`` RSA, ``n``, ``e``); raises :class:`JWTError` for anything else."""
        if jwk.get("kty") != "RSA":
            raise JWTError(f"key type {jwk.get('kty')!r}, not RSA")
        n, e, kid = jwk.get("n"), jwk.get("e"), jwk.get("kid", "")
        if not isinstance(n, str) or not isinstance(e, str) or not isinstance(kid, str):
            raise JWTError("RSA key without n/e")
        key = cls(b64url_to_int(n), b64url_to_int(e), kid)
        if key.n.bit_length() < 1024 or key.e < 3 or key.e % 2 == 0:
            raise JWTError("RSA key too small or with a bad exponent")
        return key


def _encoded_message(digest: bytes, size: int) -> bytes:
    t = SHA256_DIGEST_INFO + digest
    if size < len(t) + 11:
        raise JWTError("key too small")
    return b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t


def verify_rs256(key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256: whether ``signature`` is ``key``'s over ``signing_input``."""
    if len(signature) != key.size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    em = pow(s, key.e, key.n).to_bytes(key.size, "big")
    return hmac.compare_digest(em, _encoded_message(hashlib.sha256(signing_input).digest(), key.size))


@dataclass(frozen=True, slots=True)
class PrivateKey:
    n: int
    e: int
    d: int
    kid: str = ""
    #: the primes, when known: signing then uses the CRT (about 3x faster)
    p: int = 0
    q: int = 0

    def public(self) -> PublicKey:
        return PublicKey(self.n, self.e, self.kid or self.thumbprint())

    def thumbprint(self) -> str:
        """The JWK thumbprint (RFC 7638): the ``kid`` when none is given."""
        canon = json.dumps(
            {"e": int_to_b64url(self.e), "kty": "RSA", "n": int_to_b64url(self.n)},
            separators=(",", ":"),
            sort_keys=True,
        )
        return b64url_encode(hashlib.sha256(canon.encode()).digest())

    def sign_rs256(self, signing_input: bytes) -> bytes:
        size = (self.n.bit_length() + 7) // 8
        m = int.from_bytes(_encoded_message(hashlib.sha256(signing_input).digest(), size), "big")
        if self.p and self.q:
            m1 = pow(m, self.d % (self.p - 1), self.p)
            m2 = pow(m, self.d % (self.q - 1), self.q)
            s = m2 + self.q * ((pow(self.q, -1, self.p) * (m1 - m2)) % self.p)
        else:
            s = pow(m, self.d, self.n)
        return s.to_bytes(size, "big")


def encode(claims: Mapping[str, Any], key: PrivateKey, header: Mapping[str, Any] | None = None) -> str:
    """A compact JWS of ``claims`` signed RS256 by ``key`` (header ``alg``/``typ``/``kid`` unless given)."""
    h = {"alg": "RS256", "typ": "JWT", "kid": key.public().kid, **(header or {})}
    signing_input = (
        b64url_encode(json.dumps(h, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + b64url_encode(key.sign_rs256(signing_input.encode("ascii")))


# --- keys from PEM: a DER reader for exactly the shapes openssl writes ----------------------------------

_PEM: Final = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)
_RSA_OID: Final = bytes.fromhex("2a864886f70d010101")


def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: (tag, value, next position)."""
    if pos + 2 > len(data):
        raise JWTError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise JWTError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise JWTError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _sequence(data: bytes) -> list[tuple[int, bytes]]:
    tag, body, _ = _der(data, 0)
    if tag != 0x30:
        raise JWTError("not a DER SEQUENCE")
    out, pos = [], 0
    while pos < len(body):
        t, v, pos = _der(body, pos)
        out.append((t, v))
    return out


def _rsa_private_from_pkcs1(der: bytes, kid: str) -> PrivateKey:
    items = _sequence(der)
    if len(items) < 9 or any(t != 0x02 for t, _ in items[:9]):
        raise JWTError("not a PKCS#1 RSAPrivateKey")
    n, e, d, p, q = (int.from_bytes(v, "big") for _, v in items[1:6])
    if p * q != n:
        p = q = 0
    return PrivateKey(n, e, d, kid, p, q)


def private_key_from_pem(text: str, kid: str = "") -> PrivateKey:
    """The RSA private key in ``text`` (``BEGIN RSA PRIVATE KEY`` or an unencrypted ``BEGIN PRIVATE KEY``)."""
    m = _PEM.search(text)
    if m is None:
        raise JWTError("no PEM block")
    try:
        der = base64.b64decode("".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise JWTError("PEM body is not base64") from exc
    if m.group(1) == "RSA PRIVATE KEY":
        return _rsa_private_from_pkcs1(der, kid)
    if m.group(1) == "PRIVATE KEY":
        items = _sequence(der)  # PrivateKeyInfo: version, AlgorithmIdentifier, OCTET STRING
        if len(items) < 3 or items[1][0] != 0x30 or items[2][0] != 0x04:
            raise JWTError("not a PKCS#8 PrivateKeyInfo")
        _, oid, _ = _der(items[1][1], 0)
        if oid != _RSA_OID:
            raise JWTError("PKCS#8 key is not RSA")
        return _rsa_private_from_pkcs1(items[2][1], kid)
    raise JWTError(f"PEM block {m.group(1)!r} is not an RSA private key")


_SMALL_PRIMES: Final = tuple(p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2)))


def _probable_prime(n: int, rounds: int = 40) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        p = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if p % e != 1 and _probable_prime(p):
            return p


def generate(bits: int = 2048, e: int = 65537, kid: str = "") -> PrivateKey:
    """A fresh RSA key (the simulator signs its fake access tokens with it when no key file is given)."""
    while True:
        p, q = _prime(bits // 2, e), _prime(bits - bits // 2, e)
        if p != q:
            break
    n = p * q
    d = pow(e, -1, (p - 1) * (q - 1))
    return PrivateKey(n, e, d, kid, p, q)
