"""Writes an htpasswd file with the hashes real tools make, for tests/auth.rs.

usage: htpasswd.py FILE USER:PASSWORD:KIND ...   (KIND: bcrypt or argon2)

bcrypt as Python's `bcrypt` makes it (the `$2b$` form; Apache's
`htpasswd -B` writes the same algorithm as `$2y$`), argon2 as
`argon2-cffi` makes it (argon2id in PHC form, its default parameters).
"""

import sys

import argon2
import bcrypt


def hashed(password: str, kind: str) -> str:
    if kind == "bcrypt":
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    if kind == "argon2":
        return argon2.PasswordHasher().hash(password)
    raise SystemExit(f"unknown kind {kind}")


def main() -> None:
    path, entries = sys.argv[1], sys.argv[2:]
    lines = []
    for entry in entries:
        user, password, kind = entry.split(":")
        lines.append(f"{user}:{hashed(password, kind)}")
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
