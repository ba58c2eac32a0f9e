"""BERT features for Mandarin phones: hidden_states[-3] of chinese-roberta-wwm-ext-large, one vector per character
repeated over that character's phones (word2ph). Other languages get zeros. Loaded from a local directory only."""

from __future__ import annotations

from pathlib import Path

import torch

from gsvkit.errors import CheckpointError, TextError

BERT_DIM = 1024


def zeros_bert(n_phones: int, dim: int = BERT_DIM) -> torch.Tensor:
    """[dim, n_phones] zeros: upstream's BERT features for every language but zh."""
    return torch.zeros(dim, n_phones, dtype=torch.float32)


class BertFeaturizer:
    """Callable ``(norm_text, word2ph) -> [hidden, n_phones]`` over a local transformers BERT directory."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"BERT directory {path} not found; give the chinese-roberta-wwm-ext-large folder")
        try:
            from transformers import AutoModelForMaskedLM, AutoTokenizer, BertModel
        except ImportError as e:
            raise CheckpointError("BERT features need transformers: pip install 'gsvkit[features]'") from e
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            try:
                self.model = AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True)
            except (ValueError, OSError):
                self.model = BertModel.from_pretrained(str(path), local_files_only=True)
        except OSError as e:
            raise CheckpointError(f"cannot load a BERT model from {path}: {e}") from e
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.hidden_size = int(self.model.config.hidden_size)  # 1024 for chinese-roberta-wwm-ext-large

    @torch.no_grad()
    def __call__(self, norm_text: str, word2ph: list[int]) -> torch.Tensor:
        if len(word2ph) != len(norm_text):
            raise TextError(f"word2ph has {len(word2ph)} entries for {len(norm_text)} characters of {norm_text!r}")
        inputs = self.tokenizer(norm_text, return_tensors="pt").to(self.device)
        out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-3][0].float().cpu()[1:-1]  # [chars, H]: [CLS]/[SEP] dropped
        if hidden.shape[0] != len(word2ph):
            raise TextError(f"the tokenizer split {norm_text!r} into {hidden.shape[0]} tokens, not one per character")
        counts = torch.tensor(word2ph, dtype=torch.long)
        return hidden.repeat_interleave(counts, dim=0).T.contiguous()  # [H, n_phones]


def features_for_segments(segments, featurizer: BertFeaturizer | None, dim: int = BERT_DIM) -> torch.Tensor:
    """[dim, total phones] for the per-segment results of ``TextFrontend.process_segments``.

    As upstream's ``get_phones_and_bert``: Mandarin segments get BERT features (when a featurizer is given),
    every other segment zeros; the pieces are concatenated along phones.
    """
    if featurizer is not None:
        dim = featurizer.hidden_size
    parts = []
    for seg in segments:
        if featurizer is not None and seg.language.replace("all_", "") == "zh" and seg.word2ph:
            parts.append(featurizer(seg.norm_text, seg.word2ph))
        else:
            parts.append(zeros_bert(len(seg.phones), dim))
    if not parts:
        return zeros_bert(0, dim)
    return torch.cat(parts, dim=1)
