"""``keygen`` and ``verify``: make a key pair; check a tarball against its signature."""

from __future__ import annotations

import argparse
from pathlib import Path

from codecache.cli.common import config_of
from codecache.core.errors import ConfigError, Exit


def cmd_keygen(args: argparse.Namespace) -> int:
    from codecache.core.signing import generate_key, write_key_pair

    secret = generate_key()
    write_key_pair(secret, args.secret_key, args.public_key)
    print(f"key {secret.public.keyid}: secret {args.secret_key} (mode 0600), "
          f"public {args.public_key}")
    return Exit.OK


def cmd_verify(args: argparse.Namespace) -> int:
    from codecache.core.pin import GIT, SVN
    from codecache.core.signing import load_minisig, load_public_key, load_trusted_keys
    from codecache.core.verify import verify_tarball

    sig_path: Path = args.sig or args.file.with_name(args.file.name + ".minisig")
    if args.key is not None:
        key = load_public_key(args.key)
        keys = {key.keyid: key}
    else:
        keys = load_trusted_keys(config_of(args).signing.trusted_keys)
    minisig = load_minisig(sig_path)
    try:
        with args.file.open("rb") as fh:
            fields = verify_tarball(keys, minisig, fh).fields
    except FileNotFoundError:
        raise ConfigError(f"file {args.file} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read {args.file}: {err.strerror}") from err
    # Where it was built from, as signed: svn=URL@REV or git=URL@COMMIT (the full id).
    source = next((f"{kind}={fields[kind]}" for kind in (SVN, GIT) if kind in fields),
                  "source=?")
    print(f"OK {args.file}: package={fields.get('package', '?')} "
          f"version={fields.get('version', '?')} sha256={fields.get('sha256', '?')} "
          f"{source} key={minisig.keyid}")
    return Exit.OK
