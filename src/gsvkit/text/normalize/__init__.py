"""Per-language text normalisation (numbers, dates, punctuation) in upstream's exact behaviour."""
