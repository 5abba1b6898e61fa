"""Data sets: vowels (:mod:`pnn.data.vowels`) and images (:mod:`pnn.data.images`), each split
into train, validation and test parts (:class:`Dataset`); a sealed test split raises
:class:`TestSetSealed`."""

from pnn.data.vowels import Dataset, TestSetSealed

__all__ = ["Dataset", "TestSetSealed"]
