"""Every image artbot makes says that AI made it, as whoever holds the file would read
it: `Image.open(--out file).info` (and exiftool, and Adobe's tools) find an XMP packet
with IPTC's digital source type trainedAlgorithmicMedia, the generator, the model and
its revision, beside the A1111 `parameters`; draws, image tools and stylize alike,
byte-identical for the same seed. With the operator's certificate and key, each PNG
also carries a signed C2PA manifest that c2pa reads back as valid."""

import datetime
import sqlite3
import xml.etree.ElementTree as ET

import pytest
from PIL import Image, ImageDraw

from artbot import __version__
from generators.bundled import available

XMP = "XML:com.adobe.xmp"
AI_MADE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
NS = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
      "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
      "xmp": "http://ns.adobe.com/xap/1.0/", "artbot": "urn:artbot:xmp:1.0/"}

needs_bundled = pytest.mark.skipif(len(available()) < 3, reason="bundled models not installed")


def marks(path) -> dict[str, str]:
    """What the file's XMP says, by property (Pillow reads the packet; the standard
    library's XML parser reads the RDF)."""
    with Image.open(path) as im:
        info = dict(im.info)
    assert isinstance(info.get(XMP), str), f"{path}: no XMP packet in {sorted(info)}"
    description = ET.fromstring(info[XMP]).find("rdf:RDF/rdf:Description", NS)
    found = {}
    for prefix, uri in NS.items():
        for element in description.findall(f"{prefix}:*", NS):
            found[element.tag.replace("{" + uri + "}", prefix + ":")] = element.text
    return found | {"parameters": info.get("parameters"), "Software": info.get("Software")}


def job_row(db, job_id):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    return row


@needs_bundled
def test_a_bundled_model_draw_says_it_is_ai_made_and_the_same_seed_gives_the_same_bytes(
        artbot, tmp_path):
    code, _, err = artbot("draw", "a red heart", "--seed", "3", "--out", "h.png")
    assert code == 0, err
    found = marks(tmp_path / "h.png")
    job = job_row(artbot.db, 1)
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE
    assert found["Iptc4xmpExt:AISystemUsed"] == "emoji-diffusion"
    # The revision in the file is the one the job recorded when it completed.
    assert job["model_revision"] and found["Iptc4xmpExt:AISystemVersionUsed"] == job["model_revision"]
    assert found["xmp:CreatorTool"] == f"artbot {__version__}"
    assert (found["artbot:Family"], found["artbot:Task"]) == ("pixel-diffusion", "draw")
    # The A1111 text is as it was, beside it.
    assert found["parameters"] == ("a red heart\nSteps: 15, Guidance: 3.5, Seed: 3, Size: 64x64, "
                                   "Model: emoji-diffusion, Generator: pixel-diffusion, Task: draw")
    assert found["Software"] == "artbot"

    code, _, err = artbot("draw", "a red heart", "--seed", "3", "--out", "again.png")
    assert code == 0, err
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "h.png").read_bytes()


def test_a_diffusers_draw_and_its_upscale_are_marked_with_the_model_folder_name(
        artbot, tiny_pipeline, tmp_path):
    code, _, err = artbot("draw", "a red fox", "--model", str(tiny_pipeline), "--size", "64x64",
                          "--steps", "2", "--seed", "5", "--out", "fox.png")
    assert code == 0, err
    found = marks(tmp_path / "fox.png")
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE
    # The folder's name, not the operator's path to it (the parameters keep that).
    assert found["Iptc4xmpExt:AISystemUsed"] == tiny_pipeline.name
    assert str(tmp_path) not in ET.tostring(ET.fromstring(Image.open(tmp_path / "fox.png")
                                                          .info[XMP]), encoding="unicode")
    assert found["Iptc4xmpExt:AISystemVersionUsed"] == job_row(artbot.db, 1)["model_revision"]
    assert found["artbot:Family"] == "diffusion"
    assert "Seed: 5" in found["parameters"] and f"Model: {tiny_pipeline}" in found["parameters"]

    code, _, err = artbot("upscale", "1", "--out", "big.png")
    assert code == 0, err
    found = marks(tmp_path / "big.png")
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE
    assert (found["Iptc4xmpExt:AISystemUsed"], found["artbot:Task"]) == (tiny_pipeline.name,
                                                                         "upscale")


@needs_bundled
def test_a_blend_and_a_stylize_result_are_marked_too(artbot, tmp_path):
    for name, colour in (("red.png", (220, 30, 30)), ("blue.png", (30, 60, 220))):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour)
        image.save(tmp_path / name)
    code, _, err = artbot("blend", "red.png", "blue.png", "--model", "emoji-vae", "--seed", "3",
                          "--out", "blend.png")
    assert code == 0, err
    found = marks(tmp_path / "blend.png")
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE
    assert (found["Iptc4xmpExt:AISystemUsed"], found["artbot:Family"],
            found["artbot:Task"]) == ("emoji-vae", "vae", "blend")

    code, _, err = artbot("stylize", "red.png", "--style", "blue.png", "--size", "32",
                          "--steps", "2", "--out", "styled.png")
    assert code == 0, err
    found = marks(tmp_path / "styled.png")
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE
    assert (found["artbot:Family"], found["artbot:Task"]) == ("style", "stylize")
    assert found["Iptc4xmpExt:AISystemVersionUsed"] == job_row(artbot.db, 2)["model_revision"]


# -- C2PA --------------------------------------------------------------------------


def certificate_chain(tmp_path):
    """A test CA and a signing certificate it issued (c2pa refuses self-signed ones),
    as PEM files: (chain, key, CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "artbot tests")])

    def usage(ca):
        return x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                             key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                             decipher_only=False)

    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    end = start + datetime.timedelta(days=30)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("artbot test CA"))
          .issuer_name(name("artbot test CA")).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("artbot operator"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(2).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain, key_file, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_file.write_bytes(ca.public_bytes(pem))
    return chain, key_file, ca_file


@needs_bundled
def test_with_the_operators_certificate_each_png_carries_a_valid_signed_c2pa_manifest(
        artbot, tmp_path, monkeypatch):
    c2pa = pytest.importorskip("c2pa")
    import io
    import json

    chain, key, ca = certificate_chain(tmp_path)
    monkeypatch.setenv("ARTBOT_C2PA_CERT", str(chain))
    monkeypatch.setenv("ARTBOT_C2PA_KEY", str(key))
    code, _, err = artbot("draw", "a red heart", "--seed", "3", "--out", "signed.png")
    assert code == 0, err
    data = (tmp_path / "signed.png").read_bytes()
    # Read as a verifier that trusts the operator's CA would.
    context = c2pa.Context.from_dict({"trust": {"user_anchors": ca.read_text()}})
    reader = c2pa.Reader("image/png", io.BytesIO(data), context=context)
    assert reader.get_validation_state() == "Trusted"
    store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    assert manifest["signature_info"]["common_name"] == "artbot operator"
    (actions,) = [a["data"]["actions"] for a in manifest["assertions"]
                  if a["label"].startswith("c2pa.actions")]
    (created,) = actions
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == AI_MADE
    assert created["softwareAgent"] == {"name": "artbot", "version": __version__}
    assert created["parameters"]["model"] == "emoji-diffusion"
    assert created["parameters"]["revision"] == job_row(artbot.db, 1)["model_revision"]
    # The XMP and the parameters are still there; the signed file is the stored one.
    found = marks(tmp_path / "signed.png")
    assert found["Iptc4xmpExt:DigitalSourceType"] == AI_MADE and "Seed: 3" in found["parameters"]
    assert len(data) < 20_000  # no thumbnail of the image inside

    # A certificate that is its own issuer is refused: the job fails in one line, and no
    # unsigned file is written in its place.
    monkeypatch.setenv("ARTBOT_C2PA_CERT", str(ca))
    code, _, err = artbot("draw", "a red heart", "--seed", "4", "--out", "unsigned.png")
    assert code != 0 and "C2PA signing failed" in err and "Traceback" not in err
    assert not (tmp_path / "unsigned.png").exists()
    # And a worker says so before it runs any job.
    code, _, err = artbot("worker", "--burst")
    assert code == 1 and err.startswith("error: C2PA signing failed") and len(err.splitlines()) == 1
    monkeypatch.delenv("ARTBOT_C2PA_KEY")
    code, _, err = artbot("worker", "--burst")
    assert code == 1 and "needs both c2pa_cert and c2pa_key" in err
