"""Image files as MNIST-style digits, for --mode=predict.

Whatever Pillow opens, in any mode: 8- and 16-bit greyscale (scaled by their
own range, not clipped), 32-bit and float images, palettes, colour, and
transparency (a digit drawn on a transparent background is the alpha
channel's shape, whichever colour its strokes are). The result is what the
model was trained on: a light digit on black, its bounding box scaled to
20x20 and centred by its centre of mass in a 28x28 frame.
"""

import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps


def suffixes() -> tuple:
  """The file name endings of every format Pillow can open (for a folder's files).

  Asked only for a folder: listing them loads all of Pillow's format plugins
  (a tenth of a second), where opening a PNG or JPEG loads the common few.
  """
  return tuple(sorted(ext for ext, kind in Image.registered_extensions().items()
                      if kind in Image.OPEN))


class UnreadableImage(ValueError):
  """A file that is not an image Pillow can decode (safely); the message names it."""


def _full_scale(image: Image.Image, pixels: np.ndarray) -> float:
  """The value of white in `image`'s mode."""
  if image.mode.startswith('I;16'):
    return 65535.0
  if image.mode == 'I':  # 32-bit: 16-bit PNGs open so in some Pillow versions.
    return 65535.0 if pixels.max() > 255 else 255.0
  if image.mode == 'F':
    return 1.0 if pixels.max() <= 1 else (255.0 if pixels.max() <= 255 else pixels.max())
  return 255.0


def grey_levels(image: Image.Image) -> np.ndarray:
  """`image` as grey levels in [0, 255] (float32), transparency composited away.

  A transparent background is filled with the colour opposite to the
  strokes' (their mean grey where opaque), so the strokes stand out however
  they were drawn.
  """
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    pixels = np.asarray(image, np.float64)
    return (np.clip(pixels / _full_scale(image, pixels), 0.0, 1.0) * 255).astype(np.float32)
  if image.mode in ('P', 'PA'):
    image = image.convert('RGBA' if image.mode == 'PA' or 'transparency' in image.info
                          else 'RGB')
  if image.mode not in ('1', 'L', 'LA', 'La', 'RGB', 'RGBA', 'RGBa'):
    image = image.convert('RGB')  # CMYK, YCbCr, LAB, HSV, ...
  alpha = None
  if image.mode in ('LA', 'La', 'RGBA', 'RGBa') or 'transparency' in image.info:
    image = image.convert('RGBA')
    alpha = np.asarray(image.getchannel('A'), np.float64) / 255.0
  grey = np.asarray(image.convert('L'), np.float32)
  if alpha is None or alpha.min() == 1.0:
    return grey
  opaque = alpha > 0.5
  strokes = grey[opaque].mean() if opaque.any() else 0.0
  background = 255.0 if strokes < 127.5 else 0.0
  return (alpha * grey + (1.0 - alpha) * background).astype(np.float32)


def open_grey(path: str) -> np.ndarray:
  """The image at `path` as grey levels in [0, 255]; UnreadableImage if it is not one."""
  try:
    with warnings.catch_warnings():
      # Past PIL's limit (89 M pixels) an image is refused before it is decoded.
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        return grey_levels(ImageOps.exif_transpose(image))
  except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
    raise UnreadableImage(f'{path}: too large to decode safely ({e}); scale it down '
                          'first') from None
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on bad files.
    raise UnreadableImage(f'{path}: not an image Pillow can read ({e})') from None


def load_digit(path: str, shape=(28, 28, 1)) -> np.ndarray | None:
  """An image file as an MNIST-style uint8 array: a light digit on black.

  Any size or mode (open_grey). A light background (a digit drawn dark on
  white, as people do) is inverted. The digit's bounding box is scaled to fit
  20x20, keeping its aspect ratio, and centred by its centre of mass in the
  28x28 frame, as MNIST's digits were. None when the image has no ink (blank,
  or one colour): there is no digit to classify. UnreadableImage if the file
  cannot be decoded.
  """
  pixels = open_grey(path)
  background = np.median(np.concatenate(
      [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]))
  if background > 127:
    pixels, background = 255 - pixels, 255 - background
  pixels = np.clip(pixels - background, 0, None)
  if pixels.max() > 0:
    pixels *= 255 / pixels.max()
  ink = pixels > 0.2 * 255
  height, width = shape[0], shape[1]
  box = int(round(min(height, width) * 20 / 28))
  if not ink.any():
    return None
  rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
  crop = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  scale = box / max(crop.shape)
  size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
  digit = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(
      size, Image.Resampling.LANCZOS), np.float32)
  # Thin strokes on a big canvas fade when shrunk: bring the ink back to full.
  digit = np.clip(digit, 0, None) * (255 / max(digit.max(), 1e-6))
  # Centre of mass to the frame's centre, as MNIST's preparation did.
  mass = digit.sum() or 1.0
  cy = (digit.sum(1) * np.arange(digit.shape[0])).sum() / mass
  cx = (digit.sum(0) * np.arange(digit.shape[1])).sum() / mass
  top = int(np.clip(round(height / 2 - cy), 0, height - digit.shape[0]))
  left = int(np.clip(round(width / 2 - cx), 0, width - digit.shape[1]))
  frame = np.zeros((height, width), np.float32)
  frame[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return np.clip(frame, 0, 255).astype(np.uint8).reshape(shape)
