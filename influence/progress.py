"""Progress bars for long batched work (tqdm; no TensorFlow import)."""
from tqdm.auto import tqdm


def progress_bar(iterable, desc: str, total: int | None = None, progress: bool | None = None):
    """A tqdm bar that disappears when done; ``progress=None`` lets tqdm decide (off without a TTY)."""
    return tqdm(iterable, desc=desc, total=total, leave=False,
                disable=None if progress is None else not progress)
