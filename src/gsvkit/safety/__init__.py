"""Protection around what gsvkit speaks and hears: output watermark, input detection, consent and audit."""
