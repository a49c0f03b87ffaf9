"""Keys and tokens for tests/auth.rs, made with PyJWT and cryptography.

usage:
  jwt_tool.py keys DIR [KID-SUFFIX]
      writes DIR/jwks.json (public RSA, EC P-256, Ed25519 keys and an HMAC
      secret, with kids rsa, ec, ed, hmac, each followed by KID-SUFFIX),
      DIR/rsa.pub.pem, and the private keys the tokens are signed with
  jwt_tool.py mint DIR KIND [CLAIMS-JSON]
      prints a token. KIND: rs256, es256, eddsa, hs256; wrong-key (RS256 by
      a key not in the JWKS); none (alg none, unsigned); confusion (HS256
      with the RSA public key's PEM as the secret). CLAIMS-JSON overrides
      the defaults; "exp_in" and "nbf_in" are seconds from now, and
      "kid_suffix" goes after the key's kid in the header.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
NO_PASSWORD = serialization.NoEncryption()


def write(path, data):
    with open(path, "wb") as out:
        out.write(data)


def keys(directory, suffix=""):
    private = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "wrong": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    for name, key in private.items():
        write(os.path.join(directory, f"{name}.pem"), key.private_bytes(PEM, PKCS8, NO_PASSWORD))
    write(os.path.join(directory, "rsa.pub.pem"), private["rsa"].public_key().public_bytes(PEM, SPKI))
    secret = os.urandom(32)
    write(os.path.join(directory, "hmac.secret"), secret)
    jwks = []
    for kid, to_jwk in [
        ("rsa", lambda: RSAAlgorithm.to_jwk(private["rsa"].public_key(), as_dict=True)),
        ("ec", lambda: ECAlgorithm.to_jwk(private["ec"].public_key(), as_dict=True)),
        ("ed", lambda: OKPAlgorithm.to_jwk(private["ed"].public_key(), as_dict=True)),
        ("hmac", lambda: HMACAlgorithm.to_jwk(secret, as_dict=True)),
    ]:
        entry = to_jwk()
        entry["kid"] = kid + suffix
        jwks.append(entry)
    write(os.path.join(directory, "jwks.json"), json.dumps({"keys": jwks}).encode())


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_key(directory, name):
    with open(os.path.join(directory, f"{name}.pem"), "rb") as source:
        return serialization.load_pem_private_key(source.read(), password=None)


def mint(directory, kind, overrides):
    now = int(time.time())
    suffix = overrides.pop("kid_suffix", "")
    claims = {"sub": "alice", "iss": "https://issuer.test", "aud": "chat", "exp": now + 300}
    for key, value in overrides.items():
        if key == "exp_in":
            claims["exp"] = now + value
        elif key == "nbf_in":
            claims["nbf"] = now + value
        else:
            claims[key] = value
    if kind in ("none", "confusion"):
        alg = "none" if kind == "none" else "HS256"
        header = {"alg": alg, "typ": "JWT", "kid": "rsa"}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        if kind == "none":
            return signing_input + "."
        with open(os.path.join(directory, "rsa.pub.pem"), "rb") as source:
            secret = source.read()
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"
    if kind == "hs256":
        with open(os.path.join(directory, "hmac.secret"), "rb") as source:
            return jwt.encode(claims, source.read(), algorithm="HS256", headers={"kid": "hmac" + suffix})
    alg, name, kid = {
        "rs256": ("RS256", "rsa", "rsa"),
        "es256": ("ES256", "ec", "ec"),
        "eddsa": ("EdDSA", "ed", "ed"),
        "wrong-key": ("RS256", "wrong", "rsa"),
    }[kind]
    return jwt.encode(claims, private_key(directory, name), algorithm=alg, headers={"kid": kid + suffix})


def main():
    command, directory = sys.argv[1], sys.argv[2]
    if command == "keys":
        keys(directory, sys.argv[3] if len(sys.argv) > 3 else "")
    else:
        overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
        print(mint(directory, sys.argv[3], overrides))


if __name__ == "__main__":
    main()
