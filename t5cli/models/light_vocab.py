"""Vocabularies without TensorFlow, for decoding text in a short command.

seqio's vocabulary classes live in a module that imports TensorFlow, which costs about
4 s of CPU before the first token: more than the whole of a warm one-line ``t5 infer``.
A training run therefore records its task's vocabularies in ``t5cli_run.json``
(:func:`describe_task`), and ``t5 infer --input`` rebuilds them from that record with
:func:`build` when it can: seqio's ``ByteVocabulary`` and ``SentencePieceVocabulary``
(with its extra ids, in seqio's order) on a local model file. Anything else (another
vocabulary class, normalizer overrides, a remote file) is not described, and the command
takes seqio's vocabulary as before.

:func:`build`'s vocabularies encode and decode exactly as seqio's do (the tests compare
them): ``encode(text) -> ids`` without EOS, ``decode(ids) -> text`` up to the first EOS.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def describe(vocabulary) -> Optional[Dict[str, Any]]:
    """A JSON-able spec of a seqio vocabulary that :func:`build` can rebuild, else None."""
    kind = type(vocabulary).__name__
    if kind == "ByteVocabulary":
        return {"kind": "byte", "extra_ids": int(vocabulary.extra_ids)}
    if kind == "SentencePieceVocabulary":
        path = str(vocabulary.sentencepiece_model_file)
        if "://" in path or getattr(vocabulary, "_normalizer_spec_overrides", None) is not None:
            return None
        return {"kind": "sentencepiece", "path": os.path.abspath(path),
                "extra_ids": int(vocabulary.extra_ids),
                "reverse_extra_ids": bool(getattr(vocabulary, "_reverse_extra_ids", True))}
    return None


def describe_task(task) -> Optional[Dict[str, Any]]:
    """``{'inputs': spec, 'targets': spec, 'add_eos': bool}`` for a task's features, or None
    when one of them cannot be described (or the task is a mixture)."""
    features = getattr(task, "output_features", {})
    if "inputs" not in features or "targets" not in features:
        return None
    inputs, targets = describe(features["inputs"].vocabulary), describe(features["targets"].vocabulary)
    if inputs is None or targets is None:
        return None
    return {"inputs": inputs, "targets": targets, "add_eos": bool(features["inputs"].add_eos)}


def build(spec: Dict[str, Any]):
    """The vocabulary a :func:`describe` spec stands for; None if its file is gone."""
    if spec.get("kind") == "byte":
        return ByteVocab(spec.get("extra_ids", 0))
    if spec.get("kind") == "sentencepiece" and os.path.isfile(spec.get("path", "")):
        return SentencePieceVocab(spec["path"], spec.get("extra_ids", 0), spec.get("reverse_extra_ids", True))
    return None


class ByteVocab:
    """seqio's ``ByteVocabulary``: UTF-8 bytes shifted by the 3 special ids."""

    eos_id = EOS_ID
    _special, _bytes = 3, 256

    def __init__(self, extra_ids: int = 0):
        self.extra_ids = extra_ids

    @property
    def vocab_size(self) -> int:
        return self._special + self._bytes + self.extra_ids

    def encode(self, text: str) -> List[int]:
        return [b + self._special for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        ids = _up_to_eos([UNK_ID if i >= self._special + self._bytes else int(i) for i in ids])
        data = bytes(i - self._special for i in ids if self._special <= i < self._special + self._bytes)
        return data.decode("utf-8", errors="ignore")


class SentencePieceVocab:
    """seqio's ``SentencePieceVocabulary``: the model with its extra ids added as pieces."""

    eos_id = EOS_ID

    def __init__(self, path: str, extra_ids: int = 0, reverse_extra_ids: bool = True):
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2

        with open(path, "rb") as f:
            proto = sentencepiece_model_pb2.ModelProto.FromString(f.read())
        order = reversed(range(extra_ids)) if reverse_extra_ids else range(extra_ids)
        for i in order:
            proto.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0,
                             type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
        self.tokenizer = sentencepiece.SentencePieceProcessor()
        self.tokenizer.LoadFromSerializedProto(proto.SerializeToString())
        self.extra_ids = extra_ids
        self.eos_id = self.tokenizer.eos_id()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.GetPieceSize()

    def encode(self, text: str) -> List[int]:
        return list(self.tokenizer.EncodeAsIds(text))

    def decode(self, ids: Sequence[int]) -> str:
        size, unk = self.tokenizer.GetPieceSize(), self.tokenizer.unk_id()
        ids = [unk if i >= size else int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id) + 1]
        return self.tokenizer.DecodeIds(ids)


def _up_to_eos(ids: List[int]) -> List[int]:
    return ids[:ids.index(EOS_ID) + 1] if EOS_ID in ids else ids


__all__ = ["describe", "describe_task", "build", "ByteVocab", "SentencePieceVocab"]
