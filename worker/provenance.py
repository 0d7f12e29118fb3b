"""Provenance: every PNG artbot makes says that AI made it, and with what.

Two marks, written beside the A1111 `parameters` text chunk of each result:

- An XMP packet, in the PNG iTXt chunk whose keyword is `XML:com.adobe.xmp` (where
  Adobe's tools, exiftool and Pillow look for it), with IPTC's digital source type
  `trainedAlgorithmicMedia`, the generator (`artbot 0.1.0` as `xmp:CreatorTool`), the
  model and its revision (IPTC's `AISystemUsed` and `AISystemVersionUsed`) and the
  family and task (artbot's own namespace). It is a pure function of the job and
  the model's revision: no dates, no ids, so the same seed still gives the same bytes.
- Optionally, a C2PA manifest (Content Credentials) signed with the operator's
  certificate and key (settings `c2pa_cert` and `c2pa_key`, and the `c2pa-python`
  package): one `c2pa.created` action with the same digital source type, the model
  in its parameters. A signature is new each time (a fresh claim id, ECDSA's fresh
  nonce), so signed files of the same seed have the same pixels and text chunks but
  not the same bytes.

The worker marks each result as it stores it (`worker.runner`); a remote worker does
the same with its own settings, and the dispatcher stores its bytes as they come.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape

from artbot import __version__
from artbot.config import Settings
from artbot.errors import UserError
from storage.jobs import Job
from worker.fleet import short_model

# The PNG iTXt keyword of an XMP packet (XMP Specification Part 3, "PNG").
XMP_KEY = "XML:com.adobe.xmp"
# IPTC's digital source type of media a trained model made.
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR = "artbot"
# artbot's XMP namespace: what IPTC has no property for (the family, the task).
ARTBOT_NS = "urn:artbot:xmp:1.0/"


@dataclass(frozen=True)
class Provenance:
    """What made an image: the model (as the job names it), its revision when known,
    the generator family and the task."""

    model: str
    revision: str | None
    family: str
    task: str

    @classmethod
    def of(cls, job: Job) -> Provenance:
        return cls(model=job.model, revision=job.model_revision, family=job.family,
                   task=job.kind)

    @property
    def model_name(self) -> str:
        """The model's short name: a folder or file by its last part (an operator's
        paths mean nothing to whoever holds the file), a hub id or a name as it is."""
        return short_model(self.model)

    def xmp(self) -> str:
        """The XMP packet (RDF/XML, element form; no padding, no dates)."""
        fields = [("Iptc4xmpExt:DigitalSourceType", TRAINED_ALGORITHMIC_MEDIA),
                  ("Iptc4xmpExt:AISystemUsed", self.model_name),
                  ("Iptc4xmpExt:AISystemVersionUsed", self.revision),
                  ("xmp:CreatorTool", f"{GENERATOR} {__version__}"),
                  ("artbot:Family", self.family),
                  ("artbot:Task", self.task)]
        body = "".join(f"   <{name}>{escape(value)}</{name}>\n" for name, value in fields if value)
        return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
                '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
                ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
                '  <rdf:Description rdf:about=""\n'
                '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
                '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
                f'    xmlns:artbot="{ARTBOT_NS}">\n'
                f'{body}'
                '  </rdf:Description>\n'
                ' </rdf:RDF>\n'
                '</x:xmpmeta>\n'
                '<?xpacket end="r"?>')

    def c2pa_manifest(self) -> dict[str, Any]:
        """The C2PA manifest definition c2pa's Builder signs: artbot as the claim
        generator, one `c2pa.created` action by a trained model."""
        agent = {"name": GENERATOR, "version": __version__}
        parameters = {"model": self.model_name, "family": self.family, "task": self.task}
        if self.revision:
            parameters["revision"] = self.revision
        return {
            "claim_generator_info": [agent],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
                "description": f"Made by AI: the {self.family} model {self.model_name}.",
                "parameters": parameters,
            }]}}],
        }


def png_marks(job: Job) -> dict[str, str]:
    """The text chunks that say a job's PNG was made by AI (beside its parameters)."""
    return {XMP_KEY: Provenance.of(job).xmp()}


# -- C2PA -------------------------------------------------------------------------


class SigningFault(UserError):
    """The operator's C2PA signing is set up and cannot sign (a setting, the package,
    the certificate or the key): nothing is stored unsigned in its place."""

    exit_code = 1


# c2pa's name of the signing algorithm of each kind of key.
_EC_ALGORITHMS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


@dataclass(frozen=True)
class _Credentials:
    cert_pem: bytes  # the signing certificate, then the CA certificates that issued it
    key_pem: bytes
    alg: str


def c2pa_signature(settings: Settings, job: Job) -> Callable[[bytes], bytes] | None:
    """The last step of writing a job's PNGs: PNG bytes in, the same PNG with a C2PA
    manifest signed with the operator's key out. None when the operator signs nothing.
    Raises `SigningFault` when signing is set up and cannot work. The files are read
    for each job, so a renewed certificate needs no restart."""
    credentials = _credentials(settings)
    if credentials is None:
        return None
    manifest = Provenance.of(job).c2pa_manifest()
    return lambda png: _sign(png, manifest, credentials)


def check_c2pa(settings: Settings) -> bool:
    """At a worker's start: signs a one-pixel PNG if signing is set up, so that a
    wrong certificate or key is said before any job runs. True when it signs."""
    credentials = _credentials(settings)
    if credentials is None:
        return False
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    probe = Provenance(model="check", revision=None, family="check", task="check")
    _sign(buf.getvalue(), probe.c2pa_manifest(), credentials)
    return True


def _credentials(settings: Settings) -> _Credentials | None:
    cert, key = settings.c2pa_cert, settings.c2pa_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise SigningFault("C2PA signing needs both c2pa_cert and c2pa_key (the certificate "
                           "chain and its private key, PEM files); set both, or neither.")
    _c2pa()  # the package first: without it nothing else matters
    cert_pem, key_pem = _read("c2pa_cert", cert), _read("c2pa_key", key)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise SigningFault(f"c2pa_cert: {cert} is not a PEM certificate chain (-----BEGIN "
                           f"CERTIFICATE-----, the signing certificate first).")
    return _Credentials(cert_pem=cert_pem, key_pem=key_pem, alg=_algorithm(key, key_pem))


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SigningFault(f"{setting}: cannot read {path} ({exc.strerror or exc}).") from None


def _algorithm(path: str, key_pem: bytes) -> str:
    """c2pa's algorithm for the key: ES256/384/512 by the EC curve, Ed25519, or PS256
    for RSA (cryptography comes with c2pa-python)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise SigningFault(f"c2pa_key: {path} is encrypted; artbot needs the key unencrypted "
                           f"(readable by artbot only).") from None
    except ValueError:
        raise SigningFault(f"c2pa_key: {path} is not a PEM private key.") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return _EC_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise SigningFault(f"c2pa_key: {path} is a kind of key C2PA does not sign with; use an EC "
                       f"(P-256, P-384, P-521), Ed25519 or RSA key.")


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise SigningFault("c2pa_cert and c2pa_key are set, but the c2pa-python package is not "
                           "installed: pip install c2pa-python (or unset both).") from None
    return c2pa


def _sign(png: bytes, manifest: dict[str, Any], credentials: _Credentials) -> bytes:
    c2pa = _c2pa()
    # No thumbnail: a JPEG of the image in every PNG would add tens of kilobytes.
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    out = io.BytesIO()
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
            credentials.alg, credentials.cert_pem, credentials.key_pem, None))
        with context, signer, c2pa.Builder(manifest, context) as builder:
            builder.sign(signer, "image/png", io.BytesIO(png), out)
    except c2pa.C2paError as exc:
        raise SigningFault(
            f"C2PA signing failed: {exc}. The certificate (c2pa_cert) must match c2pa_key, be "
            f"valid today and be issued by a CA (c2pa refuses self-signed certificates)."
        ) from None
    return out.getvalue()
