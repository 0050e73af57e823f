"""WeCom's callback message crypto (the ``WXBizMsgCrypt`` scheme), on ``cryptography``.

As WeCom documents it (加解密方案说明):

* ``msg_signature`` = SHA-1 hex of token, timestamp, nonce and the encrypted text, sorted as
  strings and concatenated;
* AESKey = Base64_Decode(EncodingAESKey + "="), 32 bytes; AES-256-CBC, IV = AESKey[:16];
  PKCS#7 padding to a multiple of **32** bytes (not AES's 16);
* plaintext = 16 random bytes + message length (4 bytes, big-endian) + message + receive id
  (the corp id for a self-built app), and the receive id must be the expected one.

XML is only ever parsed by :func:`parse_xml` (``defusedxml``: no DTD, no entity, no external
reference), since both the outer body and the decrypted payload come from the network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException

BLOCK = 32  # WeCom's PKCS#7 block: padding is 1..32 bytes
MAX_CIPHERTEXT = 1 << 20  # base64 characters; WeCom's events are a few KiB


class WeComCryptoError(ValueError):
    """Something about a WeCom payload did not check out; ``reason`` is the refusal code."""

    reason = "bad_payload"


class BadSignature(WeComCryptoError):
    reason = "bad_signature"


class BadKey(WeComCryptoError):
    reason = "bad_aes_key"


class BadCiphertext(WeComCryptoError):
    """Not base64, not whole blocks, bad padding or a length that does not fit."""

    reason = "bad_ciphertext"


class WrongReceiver(WeComCryptoError):
    reason = "wrong_corp_id"


class BadXml(WeComCryptoError):
    """Not well-formed, or hostile: a DTD, an entity or an external reference."""

    reason = "bad_xml"


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypted))).encode()
                        ).hexdigest()


def verify(token: str, timestamp: str, nonce: str, encrypted: str, given: str) -> None:
    expected = signature(token, timestamp, nonce, encrypted)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise BadSignature("msg_signature does not verify")


def aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise BadKey("an EncodingAESKey is 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("the EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise BadKey("the EncodingAESKey does not decode to 32 bytes")
    return key


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def decrypt(encoding_aes_key: str, ciphertext_b64: str, receive_id: str) -> str:
    """The message inside ``ciphertext_b64``, once its receive id is ``receive_id``."""
    key = aes_key(encoding_aes_key)
    if len(ciphertext_b64) > MAX_CIPHERTEXT:
        raise BadCiphertext("the encrypted message is too long")
    try:
        data = base64.b64decode(ciphertext_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadCiphertext("the encrypted message is not base64") from None
    if not data or len(data) % 16:
        raise BadCiphertext("the encrypted message is not whole AES blocks")
    decryptor = _cipher(key).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
        raise BadCiphertext("bad PKCS#7 padding (wrong EncodingAESKey?)")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise BadCiphertext("the decrypted message is too short")
    (length,) = struct.unpack(">I", plain[16:20])
    if 20 + length > len(plain):
        raise BadCiphertext("the message length does not fit the decrypted data")
    message, receiver = plain[20:20 + length], plain[20 + length:]
    if not hmac.compare_digest(receiver, receive_id.encode()):
        raise WrongReceiver("the message is for another corp id")
    try:
        return message.decode()
    except UnicodeDecodeError:
        raise BadCiphertext("the decrypted message is not UTF-8") from None


def encrypt(encoding_aes_key: str, message: str, receive_id: str,
            random_prefix: bytes | None = None) -> str:
    """``message`` as WeCom encrypts it (for passive replies and tests)."""
    prefix = os.urandom(16) if random_prefix is None else random_prefix
    if len(prefix) != 16:
        raise ValueError("the random prefix is 16 bytes")
    body = message.encode()
    plain = prefix + struct.pack(">I", len(body)) + body + receive_id.encode()
    pad = BLOCK - len(plain) % BLOCK
    encryptor = _cipher(aes_key(encoding_aes_key)).encryptor()
    data = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(data).decode()


def parse_xml(data: bytes | str) -> dict[str, str]:
    """A flat WeCom XML document (``<xml><Tag>text</Tag>...</xml>``) as a dict of its
    children's text; a DTD, an entity (billion laughs) or an external reference is refused."""
    try:
        root: Any = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                      forbid_external=True)
    except DefusedXmlException as exc:
        raise BadXml(f"refused XML: {type(exc).__name__}") from None
    except (ParseError, ValueError) as exc:
        raise BadXml(f"not well-formed XML: {exc}") from None
    return {child.tag: child.text or "" for child in root}
