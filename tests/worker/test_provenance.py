"""worker.provenance on its own: the XMP packet is well-formed whatever the model is
called, depends on nothing but the job (so the same seed keeps giving the same bytes),
and never shows an operator's path; a C2PA setup that cannot sign says what is wrong
in one line. (The marks in real files, through the CLI and Discord: tests/cli/
test_provenance_cli.py and tests/bot/test_provenance_bot.py.)"""

import xml.etree.ElementTree as ET

import pytest

from artbot.config import Settings
from storage.jobs import Job, JobStatus
from worker.provenance import (TRAINED_ALGORITHMIC_MEDIA, Provenance, SigningFault,
                               c2pa_signature, check_c2pa)

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"


def job(model="/srv/models/R&D <v2>", revision=None):
    return Job(id=3, user_id="u", server_id=None, channel_id=None, source="cli", kind="draw",
               family="diffusion", model=model, model_revision=revision, params={}, seeds=[1],
               batch_key="", status=JobStatus.RUNNING, attempts=1, claim_token=None,
               worker_id=None, lease_until=None, cancel_requested=False, progress_step=None,
               progress_total=None, error=None, created_at=1.0, started_at=2.0,
               finished_at=None, run_seconds=None, parent_id=None, message_id=None)


def properties(xmp: str) -> dict[str, str]:
    description = ET.fromstring(xmp).find(f"{RDF}RDF/{RDF}Description")
    return {element.tag: element.text for element in description}


def test_the_xmp_is_well_formed_for_any_model_name_and_depends_only_on_the_job():
    xmp = Provenance.of(job()).xmp()
    found = properties(xmp)
    assert found[f"{IPTC}DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert found[f"{IPTC}AISystemUsed"] == "R&D <v2>"  # the folder's name, escaped and read back
    assert "/srv/models" not in xmp
    assert f"{IPTC}AISystemVersionUsed" not in found  # no revision known: none written
    # Nothing of the moment it ran: a later job with the same model writes the same packet.
    later = job()
    later.id, later.created_at, later.started_at = 99, 500.0, 600.0
    assert Provenance.of(later).xmp() == xmp
    assert properties(Provenance.of(job(revision="abc123")).xmp())[
        f"{IPTC}AISystemVersionUsed"] == "abc123"


def test_c2pa_is_off_unless_set_and_a_setup_that_cannot_sign_says_why(tmp_path):
    assert c2pa_signature(Settings(data_dir=tmp_path), job()) is None
    assert check_c2pa(Settings(data_dir=tmp_path)) is False
    with pytest.raises(SigningFault, match="needs both c2pa_cert and c2pa_key"):
        check_c2pa(Settings(data_dir=tmp_path, c2pa_cert=str(tmp_path / "chain.pem")))
    pytest.importorskip("c2pa")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    settings = Settings(data_dir=tmp_path, c2pa_cert=str(cert), c2pa_key=str(key))
    with pytest.raises(SigningFault, match=f"c2pa_cert: cannot read {cert}"):
        check_c2pa(settings)
    cert.write_text("not a certificate")
    key.write_text("not a key")
    with pytest.raises(SigningFault, match="is not a PEM certificate chain"):
        check_c2pa(settings)
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SigningFault, match="is not a PEM private key"):
        check_c2pa(settings)
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(SigningFault, match="is encrypted"):
        check_c2pa(settings)
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(SigningFault, match="C2PA signing failed"):
        check_c2pa(settings)  # a key, but no certificate that c2pa can use
