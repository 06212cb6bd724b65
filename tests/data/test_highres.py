import numpy as np
import pytest

from jgi.data import DataError
from jgi.data import highres


def test_folder_loader_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        highres.load_image(f"folder:{tmp_path / 'missing'}", 8)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no PNG or JPEG"):
        highres.load_image(f"folder:{tmp_path}", 8)
    with pytest.raises(DataError, match="is not a folder"):
        highres.folder_images(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="Unknown image source 'kaggle:x'"):
        highres.load_image("kaggle:x", 8)
    with pytest.raises(DataError, match="Unknown scikit-image image 'lena'"):
        highres.skimage_image("lena")


def test_folder_image_is_cropped_resized_and_flagged(tmp_path):
    from PIL import Image
    grey = np.zeros((6, 10), np.uint8)
    grey[:, 2:8] = 255  # the centre square crop (columns 2..7) is all white
    Image.fromarray(grey).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")  # sorted first
    src = highres.load_image(f"folder:{tmp_path}", 3)
    assert src.native_shape == (4, 4) and not src.upsampled and src.image.shape == (3, 3, 3)
    img, up = highres.square_resize(grey, 12)
    assert up and img.shape == (12, 12, 3)
    np.testing.assert_allclose(img, 1.0, atol=1e-6)
