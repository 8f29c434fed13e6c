"""The files ``serve`` is given, read and checked before the server starts.

uvicorn loads the TLS files only once it serves, and ``ssl``'s errors name neither the
file nor what is wrong with it (``[SSL] PEM lib``); a JSON error names no file either.
Each check here says which option's file is wrong, and how: ``ValueError`` for all of them
(``serve`` exits 2, as for any bad setting).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

from .._host.security import AccessPolicy, BearerTokens


def read_text(option: str, path: str) -> str:
    """The text of the file an option names.

    Raises:
        ValueError: It does not exist or cannot be read.
    """
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ValueError(f"{option} {path}: no such file.") from None
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot be read ({exc.strerror or exc}).") from None


def access_policy(path: str) -> AccessPolicy:
    """The access policy in a JSON file (see ``docs/security.md``).

    Raises:
        ValueError: The file cannot be read, is not JSON, or is not a policy (saying why).
    """
    text = read_text("--access-policy", path)
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--access-policy {path} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ValueError(
            f'--access-policy {path} must hold a JSON object ({{"rules": ..., "default": ...}}).'
        )
    try:
        return AccessPolicy.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--access-policy {path} is not a valid access policy: {exc}") from None


def bearer_tokens(path: str) -> BearerTokens:
    """The ``name=token`` lines of a file.

    Raises:
        ValueError: The file cannot be read or holds something else.
    """
    text = read_text("--tokens-file", path)
    try:
        return BearerTokens.parse(text)
    except ValueError as exc:
        raise ValueError(f"--tokens-file {path}: {exc}") from None


def check_tls_files(
    certfile: str | None, keyfile: str | None, password: str | None, ca_certs: str | None
) -> None:
    """Check that uvicorn will be able to load the server's certificate, key and client CAs.

    Raises:
        ValueError: Naming the option and the file, and what is wrong with it.
    """
    if certfile is None:
        for option, given in (("--ssl-keyfile", keyfile), ("--ssl-ca-certs", ca_certs)):
            if given is not None:
                raise ValueError(f"{option} was given without --ssl-certfile, the server's certificate.")
        return
    cert_text = read_text("--ssl-certfile", certfile)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ValueError(f"--ssl-certfile {certfile} holds no PEM certificate (-----BEGIN CERTIFICATE-----).")
    key_option, key_path = ("--ssl-keyfile", keyfile) if keyfile is not None else ("--ssl-certfile", certfile)
    key_text = read_text(key_option, key_path) if keyfile is not None else cert_text
    if "PRIVATE KEY-----" not in key_text:
        if keyfile is None:
            raise ValueError(
                f"--ssl-certfile {certfile} holds no private key: give --ssl-keyfile (the certificate's "
                "key), or put the key in the same file."
            )
        raise ValueError(
            f"--ssl-keyfile {keyfile} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)."
        )
    encrypted = "ENCRYPTED" in key_text
    if encrypted and password is None:
        raise ValueError(
            f"{key_option} {key_path}: the private key is encrypted: give --ssl-keyfile-password."
        )

    def no_prompt() -> str:  # an encrypted key with no password must not ask on the terminal
        raise ValueError("no password")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password if password is not None else no_prompt)
    except (ssl.SSLError, ValueError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"The private key in {key_path} does not belong to the certificate in {certfile} "
                f"({key_option} and --ssl-certfile)."
            ) from None
        if encrypted:
            raise ValueError(
                f"{key_option} {key_path}: the private key cannot be decrypted with --ssl-keyfile-password."
            ) from None
        raise ValueError(
            f"--ssl-certfile {certfile}"
            + (f" and --ssl-keyfile {keyfile}" if keyfile else "")
            + f": the certificate or its key cannot be loaded ({exc})."
        ) from None
    if ca_certs is not None:
        read_text("--ssl-ca-certs", ca_certs)
        try:
            context.load_verify_locations(cafile=ca_certs)
        except ssl.SSLError:
            raise ValueError(f"--ssl-ca-certs {ca_certs} holds no PEM CA certificate.") from None
