"""A corpus of hostile photo and audio files, made here (nothing downloaded), for the edge-validation tests.

`make_corpus(dest)` writes the files and returns [(slot, path, expected codes)], slot being "photo" or "audio".
Each file is wrong in one way: not media at all, media of the other kind, truncated, a header that lies about its
size, degenerate shapes and lengths, non-finite samples. Run as a script to write them to a folder:
    python -m tests.bad_corpus /tmp/corpus
"""

from __future__ import annotations

import io
import os
import struct
import sys
import wave
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_CODES = {"invalid_image", "image_too_large", "no_face", "multiple_faces", "invalid_face_image"}
AUDIO_CODES = {"invalid_audio", "audio_too_long"}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header(width: int, height: int, *, idat: bytes | None = None, bad_crc: bool = False) -> bytes:
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if bad_crc:
        ihdr = ihdr[:-4] + b"\x00\x00\x00\x00"
    body = _png_chunk(b"IDAT", idat if idat is not None else zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + body + _png_chunk(b"IEND", b"")


def _image(size: tuple[int, int], fmt: str = "PNG", colour: tuple[int, int, int] = (200, 150, 120)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _wav(samples: np.ndarray, *, rate: int = 16000, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        else:
            w.writeframes((np.clip(samples, -1, 1) * 127 + 128).astype(np.uint8).tobytes())
    return buf.getvalue()


def _float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff(fmt_fields: tuple[int, int, int, int, int, int], data: bytes, data_len: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", *fmt_fields)
    size = len(data) if data_len is None else data_len
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_corpus(dest: Path) -> list[tuple[str, Path, set[str]]]:
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    tone = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    good_png = _image((64, 64))
    photos: dict[str, bytes] = {
        "empty.jpg": b"",
        "one_byte.png": b"\x89",
        "text.jpg": b"this is not an image\n" * 10,
        "html.png": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "svg_named.jpg": b'<svg xmlns="http://www.w3.org/2000/svg" width="4096" height="4096"><rect/></svg>',
        "json.png": b'{"image": "no"}',
        "png_signature_only.png": b"\x89PNG\r\n\x1a\n",
        "png_truncated.png": good_png[: len(good_png) // 2],
        "png_bad_crc.png": _png_header(64, 64, bad_crc=True),
        "png_zero_size.png": _png_header(0, 0),
        "png_header_100000x100000.png": _png_header(100_000, 100_000),
        "png_header_10000x10000.png": _png_header(10_000, 10_000),
        "png_garbage_idat.png": _png_header(64, 64, idat=b"\xff" * 200),
        "jpeg_soi_only.jpg": b"\xff\xd8",
        "jpeg_soi_garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)),
        "jpeg_truncated.jpg": _image((64, 64), "JPEG")[:300],
        "gif_truncated.gif": b"GIF89a\x10\x00\x10\x00",
        "webp_garbage.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
        "bmp_tiny.bmp": _image((2, 2), "BMP"),
        "tiff_header.tif": b"II*\x00\x08\x00\x00\x00",
        "pdf_named.png": b"%PDF-1.7\n1 0 obj<<>>endobj\n",
        "zip_named.jpg": b"PK\x03\x04" + b"\x00" * 26,
        "gzip_named.png": zlib.compress(good_png),
        "elf_named.png": b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
        "wav_as_photo.jpg": _wav(tone),
        "mp4_as_photo.jpg": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64,
        "random_1k.jpg": bytes(rng.integers(0, 256, 1024, dtype=np.uint8)),
        "zeros_4k.png": b"\x00" * 4096,
        "1x1.png": _image((1, 1)),
        "1x50000.png": _image((1, 50000)),
        "50000x1.png": _image((50000, 1)),
        "16x16.png": _image((16, 16)),
        "uniform_grey_256.png": _image((256, 256), colour=(128, 128, 128)),
    }
    audios: dict[str, bytes] = {
        "empty.wav": b"",
        "one_byte.wav": b"R",
        "text.wav": b"RIFF? no, just text\n" * 5,
        "png_as_audio.wav": good_png,
        "riff_not_wave.wav": b"RIFF\x04\x00\x00\x00AVI ",
        "wav_header_only.wav": _riff((1, 1, 16000, 32000, 2, 16), b""),
        "wav_one_sample.wav": _wav(np.array([0.1], np.float32)),
        "wav_ten_samples.wav": _wav(np.zeros(10, np.float32)),
        "wav_lying_length.wav": _riff((1, 1, 16000, 32000, 2, 16), b"\x00\x01" * 100, data_len=2**31),
        "wav_zero_channels.wav": _riff((1, 0, 16000, 0, 0, 16), b"\x00" * 64),
        "wav_zero_rate.wav": _riff((1, 1, 0, 0, 2, 16), b"\x00" * 64),
        "wav_bad_format_tag.wav": _riff((0x7777, 1, 16000, 32000, 2, 16), b"\x00" * 3200),
        "wav_float_nan.wav": _float_wav(np.where(np.arange(16000) == 500, np.nan, tone)),
        "wav_float_inf.wav": _float_wav(np.where(np.arange(16000) == 500, np.inf, tone)),
        "wav_float_neg_inf.wav": _float_wav(np.where(np.arange(16000) == 500, -np.inf, tone)),
        "wav_float_all_nan.wav": _float_wav(np.full(16000, np.nan, np.float32)),
        "mp3_frame_header_only.mp3": b"\xff\xfb\x90\x64" + b"\x00" * 10,
        "id3_only.mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
        "ogg_garbage.ogg": b"OggS" + b"\x00" * 60,
        "flac_garbage.flac": b"fLaC" + b"\x00" * 60,
        "m4a_garbage.m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 32,
        "random_16k.wav": bytes(rng.integers(0, 256, 16384, dtype=np.uint8)),
        "zeros_8k.wav": b"\x00" * 8192,
        "html_named.mp3": b"<html><body>audio</body></html>",
    }
    out: list[tuple[str, Path, set[str]]] = []
    for name, data in photos.items():
        path = dest / "photo" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        out.append(("photo", path, PHOTO_CODES))
    for name, data in audios.items():
        path = dest / "audio" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        out.append(("audio", path, AUDIO_CODES))
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bad-corpus")
    files = make_corpus(target)
    sys.stdout.write(f"{len(files)} files in {os.fspath(target)}\n")
