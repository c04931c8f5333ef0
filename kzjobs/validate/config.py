"""Validation limits of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kzjobs.core.images import DEFAULT_MAX_PIXELS, READABLE_MODES

# A page id is a file name too: a longer one may not fit a file system.
MAX_ID_LENGTH = 128

class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Decoding stops before allocating pixels past this (decompression bombs).
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0)
    max_side: int = Field(default=16_000, gt=0)
    # A scan under 64 px cannot hold a legible character: it is a thumbnail or an error.
    min_side: int = Field(default=64, gt=0)
    # Real page JPEGs are 1-5 MB; bigger files are not read into memory to be decoded.
    max_file_bytes: int = Field(default=50_000_000, gt=0)
    # Source modes accepted before the RGB conversion: every mode the decoder reads
    # (16-bit scaled, CMYK through its ICC profile, alpha on white); a profile may narrow.
    modes: tuple[str, ...] = READABLE_MODES
    # Ids become store keys and file names: letters (of any script), digits, '.', '_'
    # and '-', starting with a letter or digit (no '/', no '..', no leading '-').
    id_pattern: str = rf"^[^\W_][\w.-]{{0,{MAX_ID_LENGTH - 1}}}$"
    # Threads that read and decode images (store reads are I/O; PIL decodes without the GIL).
    workers: int = Field(default=4, ge=1)
