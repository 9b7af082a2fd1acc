"""The one error type of media loading and preprocessing.

In: a description of what is wrong and which item it concerns. Out: `MediaError`, a `ValueError`, so that
the API layer can map every bad-media case to one HTTP 400 without knowing PIL, PyAV or torchaudio errors.
Every loader in `omniserve.encoders` raises only this type for bad input (never a library's own error).
"""

from __future__ import annotations


class MediaError(ValueError):
    """A media item could not be loaded or preprocessed: corrupt, unsupported, empty, or over a limit.

    `item` names the item in the request (e.g. "image 0", "video 'clip.mp4'"); `reason` says what is wrong.
    `str(error)` reads "<item>: <reason>".
    """

    def __init__(self, reason: str, *, item: str = "media") -> None:
        self.item = item  # which item: "image 0", "audio", "video 'clip.mp4'"
        self.reason = reason  # what is wrong, for a human: "corrupt or truncated JPEG data"
        super().__init__(f"{item}: {reason}")
