"""Protection around what gsvkit speaks and hears: output watermark, input detection, consent and audit."""

# Decoder score at or above which audio counts as watermarked (`gsv detect --threshold` defaults to it). Kept here,
# free of torch, so that the command line can show it without loading the network. See benchmarks/watermark.py.
WATERMARK_THRESHOLD = 0.35
