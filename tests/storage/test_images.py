from PIL import Image

from storage.images import ImageStore, encode_png


def test_same_image_is_stored_once_under_its_hash(tmp_path):
    store = ImageStore(tmp_path / "images")
    img = Image.new("RGB", (16, 8), (200, 10, 10))
    a = store.put_image(img, {"parameters": "red"})
    b = store.put_image(img.copy(), {"parameters": "red"})
    assert a == b
    assert (a.width, a.height) == (16, 8)
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].name == f"{a.sha256}.png"
    assert store.open(a.path).getpixel((0, 0)) == (200, 10, 10)


def test_png_bytes_are_deterministic_and_carry_parameters(tmp_path):
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    assert encode_png(img, {"parameters": "Seed: 7"}) == encode_png(img, {"parameters": "Seed: 7"})
    store = ImageStore(tmp_path)
    stored = store.put_image(img, {"parameters": "Seed: 7"})
    with Image.open(store.root / stored.path) as im:
        assert im.info["parameters"] == "Seed: 7"


def test_no_temporary_files_are_left_behind(tmp_path):
    store = ImageStore(tmp_path)
    for i in range(5):
        store.put_image(Image.new("RGB", (4, 4), (i, i, i)))
    assert not [p for p in tmp_path.rglob(".tmp-*")]
